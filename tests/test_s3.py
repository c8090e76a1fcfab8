"""The cache on an object store: extract -> verify -> train-head -> predict -> ablate against a real S3-protocol
server (moto in server mode on loopback), not a mock of the client."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from affcli.cache import FeatureStore, load_table
from affcli.cli import app
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic
from affcli.synthetic.media import write_test_video

BUCKET = "affcli-test"
runner = CliRunner()


@pytest.fixture(scope="module")
def synth_s3(s3_server, tmp_path_factory):
    """The synthetic cache uploaded to s3://BUCKET/synth.zarr; local labels."""
    cache, labels = make_synthetic(tmp_path_factory.mktemp("s3synth"), n_videos=4, n_frames=64, dims=(8, 6))
    s3_server.put(str(cache), f"{BUCKET}/synth.zarr", recursive=True)
    s3_server.invalidate_cache()
    return f"s3://{BUCKET}/synth.zarr", labels, cache


def test_extract_then_verify_on_s3(s3_server, tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    for i in range(2):
        write_test_video(d / f"v{i}.mp4", n_frames=12, fps=12.0, size=(96, 72), picture="face")
    url = f"s3://{BUCKET}/extract.zarr"
    r = runner.invoke(app, ["extract", "--cache", url, "--video-dir", str(d), "--backbone", "clip:tiny",
                            "--device", "cpu", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    assert s3_server.exists(f"{BUCKET}/extract.zarr/manifest.parquet")
    assert not s3_server.exists(f"{BUCKET}/extract.zarr/_leases/clip_tiny/v0")
    st = FeatureStore(url, mode="r")
    assert st.videos("clip:tiny") == ["v0", "v1"] and st.read_video("clip:tiny", "v0").feats.shape[0] == 12
    r = runner.invoke(app, ["cache", "verify", url])
    assert r.exit_code == 0 and f"{url}: ok" in r.output, r.output
    r = runner.invoke(app, ["extract", "--cache", url, "--video-dir", str(d), "--backbone", "clip:tiny",
                            "--device", "cpu"])
    assert r.exit_code == 0 and "2 skipped" in r.output, r.output


def test_load_table_from_s3_equals_local(synth_s3):
    url, _, local = synth_s3
    a, b = load_table(url, [VISUAL, AUDIO]), load_table(str(local), [VISUAL, AUDIO])
    assert a.videos == b.videos
    for s in (VISUAL, AUDIO):
        np.testing.assert_array_equal(a.feats[s].numpy(), b.feats[s].numpy())


def test_train_head_predict_and_ablate_on_s3(synth_s3, tmp_path):
    url, labels, _ = synth_s3
    run = tmp_path / "run"
    r = runner.invoke(app, ["train-head", "--cache", url, "--labels", str(labels), "-f", VISUAL, "-f", AUDIO,
                            "--task", "expr", "--epochs", "2", "--d-model", "16", "--window", "16", "--stride", "16",
                            "--device", "cpu", "--out", str(run)])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "config.json").read_text())["cache"] == url
    r = runner.invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "pred")])
    assert r.exit_code == 0, r.output
    assert any((tmp_path / "pred").rglob("*.txt"))
    grid = tmp_path / "g.toml"
    grid.write_text('[base]\ntask = "expr"\nfeatures = ["%s", "%s"]\nepochs = 1\nwarmup = 0\nwindow = 16\n'
                    'd_model = 16\nplots = false\ndevice = "cpu"\n[axes]\nfusion = ["none:audio", "concat"]\n'
                    'seeds = [0]\n' % (VISUAL, AUDIO))
    r = runner.invoke(app, ["ablate", str(grid), "--cache", url, "--labels", str(labels), "--out", str(tmp_path / "ab")])
    assert r.exit_code == 0 and "2 ok" in r.output, r.output
