"""`affcli prompts` and `affcli cache info|rm|export-h5|import-h5` on a small extracted cache."""
from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from affcli.cache import FeatureStore
from affcli.cli import app
from affcli.pipeline.backbones import build_backbone
from affcli.pipeline.demo_data import write_test_video

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
