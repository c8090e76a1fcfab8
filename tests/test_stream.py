"""`affcli stream`: frame-by-frame forecasts equal the offline causal `predict` (1e-4), each frame is embedded once,
and runs it cannot serve (non-causal, centred audio, other weights) are refused in one line."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from affcli.cli import app
from affcli.heads.config import RunConfig
from affcli.heads.infer.predict import predict_run
from affcli.heads.train.trainer import train_run
from affcli.pipeline.embed import forward_rows
from affcli.pipeline.extract import ExtractConfig, run_extract
from affcli.serve.features import FrameFeaturizer
from affcli.serve.stream import Streamer, frame_source
from affcli.synthetic.media import make_demo_dataset

RUNS = {"gru": dict(temporal="gru(hidden=16)", horizon=3),
        "tcn": dict(temporal="tcn(levels=2, channels=16)", horizon=2, dilation=2, pool="mean"),
        "offline": dict(temporal="tcn(levels=2, channels=16)", causal=False, label_position="frame")}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    """Three demo videos (one with a second without a face) extracted with clip:tiny on faces, and three EXPR runs."""
    root = tmp_path_factory.mktemp("stream")
    ds = make_demo_dataset(root / "data", n_videos=3, seconds=3.0, seed=0)
    cache = root / "cache.zarr"
    res = run_extract(ExtractConfig(cache=cache, backbones=["clip:tiny"], video_dir=ds.video_dir, device="cpu",
                                    batch_size=64))
    assert all(r.status == "ok" for r in res), res
    runs = {}
    for name, kw in RUNS.items():
        cfg = RunConfig.from_dict({"task": "expr", "features": ["clip:tiny"], "cache": str(cache),
                                   "labels": str(ds.label_root), "window": 8, "stride": 2, "d_model": 16,
                                   "causal": True, "label_position": "last", "epochs": 2, "batch_size": 32,
                                   "device": "cpu", "plots": False, "out": str(root / name), **kw})
        train_run(cfg)
        runs[name] = root / name
    return {"ds": ds, "cache": cache, "runs": runs, "root": root}


def _offline(run: Path, out: Path, video: str) -> np.ndarray:
    predict_run(run, None, out, videos=[video])
    df = pl.read_parquet(out / "predictions_expr.parquet").filter(pl.col("video") == video).sort("frame")
    return df.select([f"expr_{j}" for j in range(8)]).to_numpy()


@pytest.mark.parametrize("name", ["gru", "tcn"])
def test_stream_equals_offline_causal_predict(served, name, tmp_path):
    run, video = served["runs"][name], "demo00"
    off = _offline(run, tmp_path, video)
    s = Streamer.from_run(run)
    rows = list(s.run(frame_source(video=served["ds"].video_dir / f"{video}.mp4")))
    H = s.head.horizon
    assert len(rows) == len(off) and H == RUNS[name]["horizon"]
    assert [r.target for r in rows] == [r.frame + H for r in rows]
    on = np.stack([r.preds["expr"] for r in rows])
    np.testing.assert_allclose(on[: len(off) - H], off[H:], rtol=0, atol=1e-4)  # row e forecasts frame e + H
    gap = served["ds"].no_face[video]
    assert not any(r.valid for r in rows[gap[0]:gap[1]]) and all(r.valid for r in rows[: gap[0]])
    assert all(r.latency_ms > 0 for r in rows)


def test_each_frame_is_embedded_once(served):
    s = Streamer.from_run(served["runs"]["gru"])
    b = s.featurizer.visual[0].backbone
    calls = []
    embed = b.embed
    b.embed = lambda x: calls.append(len(x)) or embed(x)
    rows = list(s.run(frame_source(video=served["ds"].video_dir / "demo01.mp4", max_frames=20)))
    assert len(rows) == 20 and calls == [forward_rows("cpu")] * 20  # one forward of extract's fixed shape per frame


def test_cli_stream_writes_the_offline_forecasts(served, tmp_path):
    run, video = served["runs"]["gru"], "demo02"
    out = tmp_path / "live.csv"
    r = CliRunner().invoke(app, ["stream", "--run", str(run), "--video",
                                 str(served["ds"].video_dir / f"{video}.mp4"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "frames/s" in r.output and "p99" in r.output
    with open(out) as f:
        rows = list(csv.DictReader(f))
    off = _offline(run, tmp_path / "off", video)
    on = np.array([[float(row[f"expr_{j}"]) for j in range(8)] for row in rows])
    assert [int(row["target_frame"]) - int(row["frame"]) for row in rows] == [3] * len(rows)
    np.testing.assert_allclose(on[: len(off) - 3], off[3:], rtol=0, atol=1e-4)


def test_non_causal_run_refused_in_one_line(served):
    r = CliRunner().invoke(app, ["stream", "--run", str(served["runs"]["offline"]), "--video",
                                 str(served["ds"].video_dir / "demo00.mp4")])
    assert r.exit_code == 2 and "is not causal" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_other_backbone_weights_and_audio_features_refused(served):
    with pytest.raises(ValueError, match="other weights than the cached features"):
        Streamer.from_run(served["runs"]["gru"], seed=1)
    fp = {"modality": "audio", "dim": 8, "weights_sha256": "x", "preprocessing": {}, "alignment": "centered"}
    with pytest.raises(ValueError, match="needs --audio-align causal"):
        FrameFeaturizer(["wav2vec2:tiny"], {"wav2vec2:tiny": fp})
    with pytest.raises(ValueError, match="exactly one of"):
        next(frame_source())


def test_streamed_features_are_the_cached_ones_to_the_bit(served):
    """One frame at a time (MTCNN, aligned crops, clip:tiny) gives exactly what extraction stored from batches of
    64 frames: a frame's detection, crop and embedding never depend on its batch-mates."""
    from affcli.cache.store import FeatureStore

    f = FrameFeaturizer.from_cache(str(served["cache"]), ["clip:tiny"], "video", "cpu")
    got = [x for frame, t, ok in frame_source(video=served["ds"].video_dir / "demo01.mp4")
           for x in f.push(frame, t, ok)] + f.finish()
    rec = FeatureStore(served["cache"], mode="r").read_video("clip:tiny", "demo01")
    np.testing.assert_array_equal(np.stack([x.feats["visual"] for x in got]), rec.feats.astype(np.float32))
    assert [x.valid["visual"] for x in got] == rec.valid.tolist()


def test_an_ensemble_of_causal_runs_streams_as_predict_reads_it(served, tmp_path):
    from affcli.heads.infer.ensemble import build_ensemble

    cfg = RunConfig.from_run(served["runs"]["gru"])
    cfg.seed, cfg.out = 1, str(tmp_path / "gru1")
    train_run(cfg)
    ens = tmp_path / "ens"
    build_ensemble([served["runs"]["gru"], tmp_path / "gru1"], ens, "mean")
    video = "demo01"
    off = _offline(ens, tmp_path / "off", video)
    s = Streamer.from_run(ens)
    rows = list(s.run(frame_source(video=served["ds"].video_dir / f"{video}.mp4")))
    H = s.head.horizon
    on = np.stack([r.preds["expr"] for r in rows])
    assert len(rows) == len(off) and H == RUNS["gru"]["horizon"] and len(s.featurizers) == 1
    np.testing.assert_allclose(on[: len(off) - H], off[H:], rtol=0, atol=1e-4)
    for name, other, needle in (("mixed", "tcn", "different horizons"), ("noncausal", "offline", "is not causal")):
        cfg = json.loads((ens / "config.json").read_text())  # the same folder with another second member
        cfg["ensemble"]["members"][1]["run"] = str(served["runs"][other])
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
        res = CliRunner().invoke(app, ["stream", "--run", str(tmp_path / name), "--frames", str(tmp_path)])
        assert res.exit_code == 2 and needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
