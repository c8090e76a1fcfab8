"""`affcli stream` completes its promise (issue 20, part B): runs that read audio (the live track windowed causally as
`extract --audio-align causal` does), runs cropped with `--detect-every k` (tracked as extraction tracks, rows out
once the next key frame arrives), a camera (an OpenCV capture of a video file, and a stand-in capture), all equal to
offline `predict` to 1e-4; features that do not depend on the extraction's batch size; Ctrl-C exits 130 with whole
rows.
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from affcli.cache.store import FeatureStore
from affcli.cli import app
from affcli.heads.config import RunConfig
from affcli.heads.infer.predict import predict_run
from affcli.heads.train.trainer import train_run
from affcli.pipeline.extract import ExtractConfig, run_extract
from affcli.serve.stream import Streamer, camera_frames, frame_source, stream_run
from affcli.synthetic.media import make_demo_dataset

AUDIO = ["wav2vec2:tiny", "ast:tiny"]
RUNS = {"audio": ("av", AUDIO, "none"), "audio+visual": ("av", ["clip:tiny", "ast:tiny"], "concat"),
        "tracked k=3": ("track", ["clip:tiny"], "none")}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Three 2 s demo videos; a cache of letterboxed clip:tiny + causal wav2vec2/ast, one of Haar faces tracked every
    3rd frame; a causal VA run on each feature combination."""
    root = tmp_path_factory.mktemp("streamc")
    ds = make_demo_dataset(root / "data", n_videos=3, seconds=2.0, seed=1)
    caches = {"av": root / "av.zarr", "track": root / "track.zarr"}
    for name, kw in (("av", dict(backbones=["clip:tiny", *AUDIO], face="none", audio_align="causal")),
                     ("track", dict(backbones=["clip:tiny"], face="haar", detect_every=3))):
        res = run_extract(ExtractConfig(cache=caches[name], video_dir=ds.video_dir, device="cpu", batch_size=64, **kw))
        assert all(r.status == "ok" for r in res), res
    runs = {}
    for name, (cache, feats, fusion) in RUNS.items():
        cfg = RunConfig.from_dict({"task": "va", "features": feats, "cache": str(caches[cache]),
                                   "labels": str(ds.label_root), "window": 8, "stride": 2, "d_model": 16,
                                   "temporal": "gru(hidden=16)", "fusion": fusion, "causal": True,
                                   "label_position": "last", "horizon": 2, "epochs": 1, "batch_size": 32,
                                   "device": "cpu", "plots": False, "out": str(root / name.replace(" ", "_"))})
        train_run(cfg)
        runs[name] = Path(cfg.out)
    return {"ds": ds, "caches": caches, "runs": runs, "root": root}


def _offline(run: Path, out: Path, video: str) -> np.ndarray:
    predict_run(run, None, out, videos=[video])
    df = pl.read_parquet(out / "predictions_va.parquet").filter(pl.col("video") == video).sort("frame")
    return df.select("va_0", "va_1").to_numpy()


@pytest.mark.parametrize("name", sorted(RUNS))
def test_stream_equals_offline_predict(world, name, tmp_path):
    run, video = world["runs"][name], "demo01"
    path = world["ds"].video_dir / f"{video}.mp4"
    off = _offline(run, tmp_path, video)
    out = tmp_path / "live.csv"
    stream_run(run, video=path, out=out)
    with open(out) as f:
        rows = list(csv.DictReader(f))
    on = np.array([[float(r["va_0"]), float(r["va_1"])] for r in rows])
    assert [int(r["frame"]) for r in rows] == list(range(1, len(off) + 1))
    np.testing.assert_allclose(on[: len(off) - 2], off[2:], rtol=0, atol=1e-5)  # the features are the cached ones
    delays = [int(r["delay_frames"]) for r in rows]
    if name.startswith("tracked"):  # rows wait for the next key frame (at most k - 1 = 2 frames), never more
        assert max(delays) == 2 and min(delays) == 0
    else:
        assert set(delays) == {0}


def test_audio_features_are_the_cached_ones_frame_by_frame(world):
    """The live causal windows give exactly the stored audio features (float16), valid where they are valid."""
    s = Streamer.from_run(world["runs"]["audio"])
    video = world["ds"].video_dir / "demo02.mp4"
    from affcli.serve.stream import audio_track

    s.featurizer.set_audio(audio_track(video))
    got = [f for frame, t, ok in frame_source(video=video) for f in s.featurizer.push(frame, t, ok)]
    got += s.featurizer.finish()
    store = FeatureStore(world["caches"]["av"], mode="r")
    want = np.concatenate([store.read_video(spec, "demo02").feats.astype(np.float32) for spec in AUDIO], 1)
    valid = np.all([store.read_video(spec, "demo02").valid for spec in AUDIO], 0)
    np.testing.assert_array_equal(np.stack([f.feats["audio"] for f in got]), want)
    assert [f.valid["audio"] for f in got] == valid.tolist() and not valid[0] and valid[-1]


def test_a_video_without_audio_marks_audio_invalid_in_one_warning(world, tmp_path, silent_video, capsys):
    out = tmp_path / "x.csv"
    stream_run(world["runs"]["audio"], video=silent_video, out=out, max_frames=5)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "no audio track" in err[0]
    with open(out) as f:
        assert [r["valid"] for r in csv.DictReader(f)] == ["0"] * 5


def test_extraction_batch_size_does_not_change_a_frame_s_features(world, tmp_path):
    cache = tmp_path / "b5.zarr"
    run_extract(ExtractConfig(cache=cache, backbones=["clip:tiny", "ast:tiny"], video_dir=world["ds"].video_dir,
                              device="cpu", batch_size=5, face="none", audio_align="causal"))
    a, b = FeatureStore(world["caches"]["av"], mode="r"), FeatureStore(cache, mode="r")
    for spec in ("clip:tiny", "ast:tiny"):
        for v in b.videos(spec):
            np.testing.assert_array_equal(a.read_video(spec, v).feats, b.read_video(spec, v).feats, err_msg=spec)


def test_camera_is_a_capture_of_a_video_file_and_equals_offline(world, tmp_path):
    run, video = world["runs"]["tracked k=3"], "demo00"
    off = _offline(run, tmp_path / "off", video)
    out = tmp_path / "cam.csv"
    r = CliRunner().invoke(app, ["stream", "--run", str(run), "--camera", str(world["ds"].video_dir / f"{video}.mp4"),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    with open(out) as f:
        on = np.array([[float(x["va_0"]), float(x["va_1"])] for x in csv.DictReader(f)])
    assert len(on) == len(off)
    np.testing.assert_allclose(on[: len(off) - 2], off[2:], rtol=0, atol=1e-5)  # the features are the cached ones


def test_camera_stand_in_index_and_a_camera_that_does_not_open(world):
    frames = [frame for frame, _, _ in frame_source(video=world["ds"].video_dir / "demo02.mp4")]

    class StandIn:
        """What cv2.VideoCapture(0) gives: BGR frames until read() says no more."""

        def __init__(self, index):
            self.index, self.i, self.released = index, 0, False

        def isOpened(self):
            return self.index == 0

        def read(self):
            if self.i == len(frames):
                return False, None
            self.i += 1
            return True, np.ascontiguousarray(frames[self.i - 1][..., ::-1])

        def release(self):
            self.released = True

    got = list(camera_frames("0", capture=StandIn))
    assert len(got) == len(frames) and all(np.array_equal(g[0], f) for g, f in zip(got, frames))
    assert [g[1] for g in got] == sorted(g[1] for g in got)
    with pytest.raises(ValueError, match="camera 3 cannot be opened"):
        next(camera_frames(3, capture=StandIn))
    r = CliRunner().invoke(app, ["stream", "--run", str(world["runs"]["tracked k=3"]), "--camera",
                                 "/nonexistent/video0"])
    assert r.exit_code == 2 and len([ln for ln in r.output.splitlines() if ln.strip()]) == 1, r.output


def test_sigint_during_a_stream_exits_130_with_whole_rows(world, tmp_path):
    from affcli.synthetic.media import click_track, write_test_video

    long = write_test_video(tmp_path / "long.mp4", 500, 25.0, (64, 48), audio=click_track(20.0, 1.0))
    out = tmp_path / "live.csv"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.Popen([sys.executable, "-m", "affcli", "stream", "--run", str(world["runs"]["audio"]), "--video",
                          str(long), "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even under nohup
    deadline = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < deadline and (not out.is_file() or out.read_text().count("\n") < 6):
        time.sleep(0.05)
    assert p.poll() is None, "the stream ended before it could be interrupted"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "stream interrupted (Ctrl-C)" in lines[0] and "Traceback" not in err, err
    with open(out) as f:
        rows = list(csv.reader(f))
    assert all(len(r) == len(rows[0]) for r in rows) and f"{len(rows) - 1} frame rows written whole" in lines[0]
