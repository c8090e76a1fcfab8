"""Experiment tracking: train-head and pretrain write TensorBoard event files that tensorboard's own reader reads
(loss, validation metrics, learning rate per epoch); `--mlflow URI` logs parameters, metrics and the run folder to a
real local `mlflow server` (SQLite backend), started and stopped here."""
from __future__ import annotations

import importlib.util
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from affcli.common.runs import read_json
from affcli.heads.config import RunConfig
from affcli.heads.train.trainer import train_run
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

BASE = {"task": "expr", "features": [VISUAL, AUDIO], "epochs": 2, "device": "cpu", "window": 16, "stride": 16,
        "batch_size": 32, "d_model": 16, "plots": False, "warmup": 0}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("track"), n_videos=4, n_frames=48, dims=(8, 6))


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_train_head_writes_tensorboard_events(synth, tmp_path):
    out = tmp_path / "run"
    train_run(RunConfig.from_dict({**BASE, "cache": str(synth[0]), "labels": str(synth[1]), "out": str(out)}))
    assert list(out.glob("events.out.tfevents.*"))
    s = _scalars(out)
    hist = read_json(out / "metrics.json")["history"]
    assert [st for st, _ in s["loss/train"]] == [1, 2]
    assert [v for _, v in s["loss/train"]] == pytest.approx([h["train_loss"] for h in hist], rel=1e-6)
    assert [v for _, v in s["val/main"]] == pytest.approx([h["val_main"] for h in hist], abs=1e-6)
    assert "val/p_expr" in s and len(s["lr"]) == 2 and s["lr"][0][1] > 0
    assert any(k.startswith("loss/terms/") for k in s)

    off = tmp_path / "off"
    train_run(RunConfig.from_dict({**BASE, "epochs": 1, "cache": str(synth[0]), "labels": str(synth[1]),
                                   "out": str(off), "tensorboard": False}))
    assert not list(off.glob("events.out.tfevents.*"))


def test_pretrain_writes_tensorboard_events(synth, tmp_path):
    from affcli.heads.train.pretrain_run import PretrainConfig, run_pretrain

    out = tmp_path / "ssl"
    m = run_pretrain(PretrainConfig(cache=str(synth[0]), out=str(out), epochs=2, window=8, batch_size=16,
                                    device="cpu"))
    s = _scalars(out)
    assert [v for _, v in s["loss/train"]] == pytest.approx(m["loss"], rel=1e-6)
    assert [st for st, _ in s["lr"]] == [1, 2]


def test_mlflow_missing_or_unreachable_is_one_line(synth, tmp_path):
    from typer.testing import CliRunner

    from affcli.cli import app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    res = CliRunner().invoke(app, ["train-head", "--cache", str(synth[0]), "--labels", str(synth[1]), "-f", VISUAL,
                                   "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "r"),
                                   "--mlflow", f"http://127.0.0.1:{port}"])
    assert res.exit_code == 2 and "--mlflow" in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "r" / "metrics.json").exists()


@pytest.fixture(scope="module")
def mlflow_server(request):
    """A real `mlflow server` on a free local port with a SQLite backend and local artifacts, started by conftest as
    soon as this test is collected and stopped at the session's end; waits until it answers."""
    if importlib.util.find_spec("mlflow") is None:
        pytest.skip("mlflow is not installed (pip install -e '.[test]' brings it)")
    proc, uri, root, _ = request.config._mlflow_server
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return uri
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)


def test_mlflow_sees_the_runs_metrics_on_a_local_server(mlflow_server, synth, tmp_path):
    import mlflow

    out = tmp_path / "run"
    m = train_run(RunConfig.from_dict({**BASE, "cache": str(synth[0]), "labels": str(synth[1]), "out": str(out),
                                       "mlflow": mlflow_server, "name": "tracked"}))
    client = mlflow.MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("affcli")
    runs = client.search_runs([exp.experiment_id], "attributes.run_name = 'tracked'")
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED"
    assert r.data.params["task"] == "expr" and r.data.params["model.d_model"] == "16"
    assert r.data.metrics["final.main"] == pytest.approx(m["main"], abs=1e-9)
    hist = [h["val_main"] for h in read_json(out / "metrics.json")["history"]]
    got = sorted((x.step, x.value) for x in client.get_metric_history(r.info.run_id, "val.main"))
    assert [s for s, _ in got] == [1, 2] and [v for _, v in got] == pytest.approx(hist, abs=1e-9)
    arts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"config.json", "metrics.json", "model.safetensors"} <= arts
