"""The Dask engine beyond extract: `predict` and `cache teacher` over `--scheduler tcp://...` (a real scheduler and
worker on loopback) and `--dask-local N` give the same arrays as one process, the model is loaded once per worker,
a worker SIGKILLed mid-run changes nothing; `extract --scheduler` equals a single-process extraction."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from affcli.cache import FeatureStore
from affcli.cache.teacher import read_targets
from affcli.cli import app
from affcli.common.cluster import ClusterOptions, local_cluster, memo_builds
from affcli.heads.config import RunConfig
from affcli.heads.infer.predict import predict_run
from affcli.heads.train.teacher import ensure_targets
from affcli.heads.train.trainer import train_run
from affcli.pipeline.extract import ExtractConfig, run_extract
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic
from affcli.synthetic.media import write_test_video

VIDEOS = [f"video{i:03d}" for i in range(6)]


@pytest.fixture(scope="module")
def scheduler():
    """A real scheduler and one worker process on loopback: its tcp:// address."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None, silence_logs=40) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        with Client(cluster.scheduler_address) as client:
            yield cluster.scheduler_address, client


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic two-modality cache and a finished EXPR run on it that smooths and interpolates its outputs."""
    root = tmp_path_factory.mktemp("dpredict")
    cache, labels = make_synthetic(root, n_videos=6, n_frames=90, dims=(12, 8))
    cfg = RunConfig.from_dict(dict(task="expr", cache=str(cache), labels=str(labels), features=[VISUAL, AUDIO],
                                   temporal="transformer", d_model=16, window=16, stride=8, epochs=1, batch_size=16,
                                   smooth=2, interpolate="linear", device="cpu", plots=False,
                                   save_predictions=False, out=str(root / "run")))
    train_run(cfg)
    return cache, root / "run"


def _predict(run: tuple[Path, Path], out: Path, *extra: str) -> pl.DataFrame:
    cache, run_dir = run
    r = CliRunner().invoke(app, ["predict", "--run", str(run_dir), "--cache", str(cache), "--out", str(out),
                                 "--style", "per-video", *extra])
    assert r.exit_code == 0, r.output
    return pl.read_parquet(out / "predictions_expr.parquet")


def _same_predictions(a: Path, b: Path, fa: pl.DataFrame, fb: pl.DataFrame) -> None:
    assert fa.columns == fb.columns and fa.height == fb.height == 6 * 90
    assert fa["video"].to_list() == fb["video"].to_list() and fa["frame"].to_list() == fb["frame"].to_list()
    for c in fa.columns[2:]:
        np.testing.assert_array_equal(fa[c].to_numpy(), fb[c].to_numpy(), err_msg=c)
    files = sorted(p.name for p in a.rglob("*.txt"))
    assert len(files) == 6 and files == sorted(p.name for p in b.rglob("*.txt"))
    for p in a.rglob("*.txt"):
        assert p.read_text() == (b / p.relative_to(a)).read_text(), p.name


@pytest.fixture(scope="module")
def one_process(run, tmp_path_factory) -> tuple[Path, pl.DataFrame]:
    out = tmp_path_factory.mktemp("p1")
    return out, _predict(run, out)


def test_predict_over_a_tcp_scheduler_equals_one_process(run, one_process, scheduler, tmp_path):
    addr, client = scheduler
    frame = _predict(run, tmp_path, "--scheduler", addr)
    _same_predictions(one_process[0], tmp_path, one_process[1], frame)
    builds = client.run(memo_builds)
    assert [list(b.values()) for b in builds.values()] == [[1]], builds  # one model load for 4 tasks


def test_predict_dask_local_equals_one_process_and_split_batches_agree(run, one_process, tmp_path):
    frame = _predict(run, tmp_path / "d", "--dask-local", "2")
    _same_predictions(one_process[0], tmp_path / "d", one_process[1], frame)
    part = predict_run(run[1], run[0], tmp_path / "part", videos=VIDEOS[4:2:-1], style="per-video")  # 2, reversed
    assert len(part) == 2
    sub = pl.read_parquet(tmp_path / "part" / "predictions_expr.parquet")
    ref = one_process[1].filter(pl.col("video") == "video004")
    np.testing.assert_array_equal(sub.filter(pl.col("video") == "video004").drop("video").to_numpy(),
                                  ref.drop("video").to_numpy())


def _teacher_arrays(cache: Path, key: str) -> dict:
    t = read_targets(cache, key)
    return {v: t.read(v) for v in t.videos()}


def _same_targets(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b) == VIDEOS
    for v in a:
        assert a[v].keys() == b[v].keys()
        for k in a[v]:
            np.testing.assert_array_equal(a[v][k], b[v][k], err_msg=f"{v} {k}")


@pytest.fixture(scope="module")
def teacher_ref(run, tmp_path_factory) -> tuple[str, dict]:
    cache = tmp_path_factory.mktemp("t1") / "c.zarr"
    shutil.copytree(run[0], cache)
    key, n = ensure_targets(cache, run[1], VIDEOS, "cpu")
    assert n == 6
    return key, _teacher_arrays(cache, key)


def test_cache_teacher_over_a_tcp_scheduler_equals_in_process(run, teacher_ref, scheduler, tmp_path):
    addr, client = scheduler
    cache = tmp_path / "c.zarr"
    shutil.copytree(run[0], cache)
    args = ["cache", "teacher", str(cache), "--run", str(run[1]), "--device", "cpu", "--scheduler", addr]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert f"teacher/{teacher_ref[0]}: 6 video(s) predicted now" in r.output
    _same_targets(teacher_ref[1], _teacher_arrays(cache, teacher_ref[0]))
    assert all(set(b.values()) == {1} for b in client.run(memo_builds).values())
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 video(s) predicted now" in again.output


def _kill_busy_worker(client, killed: list[int]):
    """A progress callback that SIGKILLs a worker still processing a task when the first video comes back."""
    def on(event: str, info: dict) -> None:
        if event != "video" or killed:
            return
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return on


@pytest.fixture(scope="module")
def two_workers():
    with local_cluster(2, gpus=0, name="kill") as client:
        yield client


@pytest.mark.parametrize("command", ["predict", "teacher"])
def test_worker_killed_mid_run_then_same_output(command, run, one_process, teacher_ref, two_workers, tmp_path):
    cache = tmp_path / "c.zarr"
    shutil.copytree(run[0], cache)
    killed: list[int] = []
    opts = ClusterOptions(scheduler=two_workers.scheduler.address)
    on = _kill_busy_worker(two_workers, killed)
    if command == "predict":
        predict_run(run[1], cache, tmp_path / "out", style="per-video", cluster=opts, progress=on)
    else:
        key, n = ensure_targets(cache, run[1], VIDEOS, "cpu", cluster=opts, progress=on)
        assert key == teacher_ref[0] and n == 6
    assert killed, "no worker was killed while busy"
    if command == "predict":
        _same_predictions(one_process[0], tmp_path / "out", one_process[1],
                          pl.read_parquet(tmp_path / "out" / "predictions_expr.parquet"))
    else:
        _same_targets(teacher_ref[1], _teacher_arrays(cache, teacher_ref[0]))


def test_cluster_options_are_one_line_errors(run, tmp_path):
    cache, run_dir = run
    for extra, text in ((["--dask-local", "-1"], "--dask-local needs at least 1 worker"),
                        (["--gpus", "all", "--dask-local", "2"], "without --dask-local"),
                        (["--gpus", "0", "--device", "cpu"], "--device cpu")):
        r = CliRunner().invoke(app, ["predict", "--run", str(run_dir), "--cache", str(cache), "--out",
                                     str(tmp_path), *extra])
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and text in lines[0], r.output


def test_extract_over_a_tcp_scheduler_equals_one_process(scheduler, tmp_path):
    addr, _ = scheduler
    vids = tmp_path / "v"
    vids.mkdir()
    for i in range(3):  # lengths are multiples of the batch: extract's backbone batches span videos
        write_test_video(vids / f"v{i}.mp4", n_frames=8 + 8 * (i % 2), fps=12.0, size=(96, 72), picture="face")
    one = tmp_path / "one.zarr"
    cfg = ExtractConfig(cache=one, backbones=["clip:tiny"], video_dir=vids, device="cpu", batch_size=8,
                        decode_workers=1)
    assert [r.status for r in run_extract(cfg)] == ["ok"] * 3
    many = tmp_path / "many.zarr"
    r = CliRunner().invoke(app, ["extract", "--cache", str(many), "--video-dir", str(vids), "-b", "clip:tiny",
                                 "--device", "cpu", "--batch-size", "8", "--decode-workers", "1",
                                 "--scheduler", addr])
    assert r.exit_code == 0, r.output
    a, b = FeatureStore(one, mode="r"), FeatureStore(many, mode="r")
    assert b.videos("clip:tiny") == a.videos("clip:tiny") == ["v0", "v1", "v2"]
    for v in a.videos("clip:tiny"):
        ra, rb = a.read_video("clip:tiny", v), b.read_video("clip:tiny", v)
        for x, y in ((ra.feats, rb.feats), (ra.valid, rb.valid), (ra.timestamps, rb.timestamps)):
            np.testing.assert_array_equal(x, y, err_msg=v)
    assert b.manifest().height == 3 and set(b.manifest()["status"]) == {"ok"}
