"""`affcli prompts` and `affcli cache info|rm|export-h5|import-h5` on a small extracted cache."""
from __future__ import annotations

import h5py
import numpy as np
import polars as pl
from typer.testing import CliRunner

from affcli.cache import FeatureStore
from affcli.cli import app
from affcli.pipeline.backbones import build_backbone
from affcli.synthetic.media import write_test_video

runner = CliRunner()


def test_prompts_info_export_import_rm(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    write_test_video(d / "a.mp4", n_frames=12, fps=12.0, size=(160, 120), audio=None, picture="face")
    cache = tmp_path / "c.zarr"
    res = runner.invoke(app, ["extract", "--video-dir", str(d), "--cache", str(cache), "-b", "clip:tiny",
                              "--device", "cpu", "--prompts", "expr8"])
    assert res.exit_code == 0, res.output
    (tmp_path / "p.txt").write_text("a happy face\na sad face\n\n")
    res = runner.invoke(app, ["prompts", "--cache", str(cache), "-b", "clip:tiny", "--set", "va9",
                              "--file", str(tmp_path / "p.txt"), "--name", "mine", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    st = FeatureStore(cache, mode="r")
    prompts, emb, _ = st.read_text_embeddings("mine")
    assert prompts == ["a happy face", "a sad face"]
    np.testing.assert_allclose(emb, build_backbone("clip:tiny").encode_text(prompts), atol=1e-5)
    assert len(st.read_text_embeddings("va9")[0]) == 27
    res = runner.invoke(app, ["prompts", "--cache", str(cache), "-b", "clip:tiny", "--set", "nope"])
    assert res.exit_code == 2 and "unknown prompt set" in res.output

    info = runner.invoke(app, ["cache", "info", str(cache)])
    assert info.exit_code == 0 and "weights_sha256" in info.output and "prompt set mine" in info.output
    assert '"modality": "visual"' in info.output and '"dim": 64' in info.output
    assert "videos: 1 ok, 0 failed, 0 incomplete" in info.output
    fp = st.fingerprint("clip:tiny")
    assert (fp["modality"], fp["dim"]) == ("visual", 64)

    h5 = tmp_path / "x.h5"
    assert runner.invoke(app, ["cache", "export-h5", str(cache), str(h5)]).exit_code == 0
    res = runner.invoke(app, ["cache", "import-h5", str(h5), str(tmp_path / "d.zarr")])
    assert res.exit_code == 0 and "clip:tiny: 1 videos imported" in res.output
    a = FeatureStore(tmp_path / "d.zarr", mode="r").read_video("clip:tiny", "a")
    np.testing.assert_array_equal(a.feats, st.read_video("clip:tiny", "a").feats)

    bad = runner.invoke(app, ["cache", "info", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "no feature cache" in bad.output
    assert runner.invoke(app, ["cache", "rm", str(cache), "clip:tiny"]).exit_code == 0
    assert FeatureStore(cache, mode="r").feature_sets() == []
    assert pl.read_parquet(cache / "manifest.parquet").height == 0
    bad = runner.invoke(app, ["cache", "rm", str(cache), "clip:tiny"])
    assert bad.exit_code == 2 and "no feature set 'clip:tiny'" in bad.output


def test_import_foreign_h5_needs_modality_and_set_modality(tmp_path):
    src = tmp_path / "other_tool.h5"
    with h5py.File(src, "w") as f:
        f["a"] = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    cache = tmp_path / "c.zarr"
    res = runner.invoke(app, ["cache", "import-h5", str(src), str(cache), "--spec", "mytool:v1"])
    assert res.exit_code == 2 and "--modality visual|audio" in res.output
    res = runner.invoke(app, ["cache", "import-h5", str(src), str(cache), "--spec", "mytool:v1", "--modality", "audio"])
    assert res.exit_code == 0 and "mytool:v1: 1 videos imported" in res.output
    fp = FeatureStore(cache, mode="r").fingerprint("mytool:v1")
    assert (fp["modality"], fp["dim"]) == ("audio", 5)
    res = runner.invoke(app, ["cache", "set-modality", str(cache), "mytool:v1", "visual"])
    assert res.exit_code == 2 and "already 'audio'" in res.output
    res = runner.invoke(app, ["cache", "set-modality", str(cache), "mytool:v1", "audio"])
    assert res.exit_code == 0 and "mytool:v1: modality audio" in res.output
