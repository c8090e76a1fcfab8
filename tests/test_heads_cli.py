"""train-head / predict / evaluate through the CLI on a real (synthetic) Zarr cache and Aff-Wild2 label files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from affcli.cli import app
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("heads_cli"), n_videos=6, n_frames=90, dims=(12, 8))


def test_train_predict_evaluate(tmp_path, synth):
    cache, labels = synth
    run = tmp_path / "run"
    cfg = tmp_path / "run.toml"
    cfg.write_text('task = "expr"\nepochs = 1\nwindow = 8\n[temporal_options]\nlevels = 2\nchannels = 16\n')
    r = CliRunner().invoke(app, ["train-head", "--config", str(cfg), "--cache", str(cache), "--labels", str(labels),
                                 "-f", VISUAL, "-f", AUDIO, "--temporal", "tcn", "--fusion", "xattn", "--epochs", "6",
                                 "--loss", "ce(weights=auto)+0.1*text-contrastive", "--d-model", "16", "--window", "16",
                                 "--stride", "8", "--lr", "3e-3", "--device", "cpu", "--out", str(run)])
    assert r.exit_code == 0, r.output
    m = json.loads((run / "metrics.json").read_text())
    saved = json.loads((run / "config.json").read_text())
    assert saved["epochs"] == 6 and saved["window"] == 16 and saved["model"]["temporal_options"] == {"levels": 2, "channels": 16}
    assert m["main"] > 0.3, m["val"]
    r = CliRunner().invoke(app, ["evaluate", "--run", str(run)])
    assert r.exit_code == 0, r.output
    again = json.loads((run / "eval_val.json").read_text())
    assert again["main"] == pytest.approx(m["main"], abs=1e-6)
    out = tmp_path / "preds"
    r = CliRunner().invoke(app, ["predict", "--run", str(run), "--cache", str(cache), "--out", str(out)])
    assert r.exit_code == 0, r.output
    lines = (out / "predictions_expr.txt").read_text().splitlines()
    assert lines[0].startswith("image_location,Neutral") and len(lines) == 1 + 6 * 90
    assert lines[1].startswith("video000/00001.jpg,") and (out / "predictions_expr.parquet").exists()
    per = tmp_path / "per"
    r = CliRunner().invoke(app, ["predict", "--run", str(run), "--cache", str(cache), "--out", str(per), "--split", "val",
                                 "--style", "per-video", "--smooth", "3"])
    assert r.exit_code == 0, r.output
    files = sorted(p.name for p in per.glob("*.txt"))
    assert files == ["video004.txt", "video005.txt"]
    rows = (per / "video004.txt").read_text().splitlines()
    assert len(rows) == 91 and all(0 <= int(x) < 8 for x in rows[1:])


def test_bad_input_is_one_line_error(tmp_path, synth):
    cache, labels = synth
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "-f", "clip:nope",
                                 "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no feature set 'clip:nope'" in r.output and "clip:synth" in r.output
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "--temporal", "lstm",
                                 "--epochs", "1", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "valid temporal head names" in r.output
    r = CliRunner().invoke(app, ["train-head", "--help"])
    assert r.exit_code == 0 and "xattn-gated" in r.output and "soft-prompt" in r.output


def test_demo_train_returns_val_metrics(tmp_path, synth):
    from affcli.heads.train.demo import demo_train

    cache, labels = synth
    res = demo_train(cache, labels, tmp_path / "demo", "cpu", epochs=2, features=[VISUAL, AUDIO], tasks=("expr",))
    assert set(res) == {"expr"} and 0 <= res["expr"]["main"] <= 1
    assert (tmp_path / "demo" / "expr" / "metrics.json").exists()


def test_predicted_files_score_like_evaluate(tmp_path, synth):
    cache, labels = synth
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "--task", "expr",
                                 "--temporal", "gru", "--fusion", "concat", "--epochs", "2", "--d-model", "16",
                                 "--window", "16", "--stride", "8", "--device", "cpu", "--out", str(run)])
    assert r.exit_code == 0, r.output
    main = json.loads((run / "metrics.json").read_text())["main"]
    out = tmp_path / "sub"
    assert CliRunner().invoke(app, ["predict", "--run", str(run), "--cache", str(cache), "--out", str(out),
                                    "--split", "val"]).exit_code == 0
    r = CliRunner().invoke(app, ["score", "--task", "expr", "--pred", str(out / "predictions_expr.txt"),
                                 "--labels", str(labels), "--split", "val"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):])["main"] == pytest.approx(main, abs=1e-9)
