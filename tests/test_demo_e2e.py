"""`affcli demo` end to end, then train-head -> predict -> score on the demo's own cache and labels."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from affcli.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    res = runner.invoke(app, ["demo", "--out", str(out), "--videos", "3", "--seconds", "4"])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_demo_prints_cache_training_and_ablation(demo):
    out, text = demo
    for spec in ("clip:tiny", "wav2vec2:tiny", "ast:tiny"):
        assert spec in text
    assert "extract: 3 ok" in text
    assert "expr head: validation" in text and "va head: validation" in text
    assert "| none:visual" in text and "| xattn" in text
    assert (out / "cache.zarr" / "manifest.parquet").exists()
    assert (out / "runs" / "expr" / "metrics.json").exists()


def test_train_predict_score_roundtrip_on_demo_data(demo, tmp_path):
    out, _ = demo
    cache, labels = out / "cache.zarr", out / "data" / "labels"
    run = tmp_path / "run"
    res = runner.invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "--task", "va",
                              "--temporal", "gru", "--fusion", "concat", "--loss", "ccc", "--epochs", "3",
                              "--device", "cpu", "--out", str(run)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    preds = tmp_path / "preds"
    res = runner.invoke(app, ["predict", "--run", str(run), "--cache", str(cache), "--out", str(preds),
                              "--split", "val", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["score", "--task", "va", "--pred", str(preds), "--labels", str(labels), "--split", "val"])
    assert res.exit_code == 0, res.output
    scored = json.loads(res.output[res.output.index("{"):])
    assert scored["p_va"] == pytest.approx(metrics["val"]["p_va"], abs=1e-6)
