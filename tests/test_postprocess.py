"""Post-processing: interpolation over faceless frames by value, per-AU thresholds and per-class EXPR biases tuned on
val and stored in the run (predict/evaluate use them), and each of them as a CLI option and an ablation axis."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from affcli.cli import app
from affcli.heads.ablate import build_runs, grid_from_dict, grid_meta, run_grid
from affcli.heads.config import RunConfig
from affcli.heads.metrics import au_score, class_score
from affcli.heads.infer.postprocess import faceless, interpolate_missing, tune_biases, tune_thresholds
from affcli.heads.infer.predict import evaluate_run, predict_run
from affcli.heads.infer.score_files import score_predictions
from affcli.heads.tasks import task_outputs
from affcli.heads.train.trainer import train_run
from affcli.synthetic import features as synth
from affcli.synthetic.mtl import make_mtl_cache

torch.set_num_threads(1)
BASE = dict(temporal="mlp", window=16, stride=8, batch_size=32, d_model=32, epochs=3, patience=100, lr=3e-3,
            warmup=0, device="cpu", plots=False, save_predictions=False)


def test_interpolation_fills_faceless_frames_from_neighbours_by_value():
    lengths = np.array([6, 4, 3])
    n = int(lengths.sum())
    missing = torch.zeros(n, dtype=torch.bool)
    missing[[1, 2, 3, 6, 7, 10, 11, 12]] = True      # video 0: 1-3 between 0 and 4; video 1: 0-1 before 2; video 2: all
    va = torch.stack([torch.arange(n, dtype=torch.float32), -torch.arange(n, dtype=torch.float32)], 1)
    expr = torch.eye(8)[torch.arange(n) % 8]
    preds = {"va": va, "expr": expr}
    outs = task_outputs("mtl")
    lin = interpolate_missing(preds, missing, lengths, outs, "linear")
    near = interpolate_missing(preds, missing, lengths, outs, "nearest")
    for got in (lin, near):
        assert torch.allclose(got["va"][1:4, 0], torch.tensor([1.0, 2.0, 3.0]))  # linear between rows 0 and 4
        assert got["va"][6:8].tolist() == [[8.0, -8.0]] * 2                       # only a later neighbour: copied
        assert torch.equal(got["va"][10:], va[10:])                               # no face in the video: unchanged
        assert torch.equal(got["va"][~missing], va[~missing])
    assert torch.allclose(lin["expr"][1], 0.75 * expr[0] + 0.25 * expr[4])
    assert torch.allclose(lin["expr"][2], 0.5 * expr[0] + 0.5 * expr[4])
    assert [int(near["expr"][i].argmax()) for i in (1, 2, 3)] == [0, 0, 4] and near["expr"][3].max() == 1
    assert interpolate_missing(preds, missing, lengths, outs, "off") is preds
    valid = {"visual": ~missing, "audio": torch.ones(n, dtype=torch.bool)}
    assert torch.equal(faceless(valid), missing)
    assert torch.equal(faceless({"audio": ~missing}), missing)


def test_per_au_thresholds_improve_val_f1_when_the_best_is_not_one_half():
    rng = np.random.default_rng(0)
    n = 2000
    true = (rng.random((n, 12)) < 0.3).astype(np.int64)
    probs = np.where(true == 1, rng.uniform(0.2, 0.45, (n, 12)), rng.uniform(0.0, 0.3, (n, 12)))
    true[:100, 0] = -1
    thr = tune_thresholds(probs, true)
    assert np.all((thr > 0.2) & (thr < 0.45)), thr
    tuned = au_score((probs >= thr).astype(int), true)["p_au"]
    assert tuned > au_score((probs >= 0.5).astype(int), true)["p_au"] + 0.5
    assert tune_thresholds(probs, np.full_like(true, -1))[0] == 0.5


def test_per_class_biases_improve_macro_f1():
    rng = np.random.default_rng(1)
    n = 3000
    true = rng.integers(0, 8, n)
    logits = rng.normal(0, 1, (n, 8)) + 2.0 * np.eye(8)[true] + np.array([2.5, 0, 0, 0, 0, 0, 0, 0])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    b = tune_biases(probs, true)
    assert b[0] < 0 and b.shape == (8,)
    before = class_score(probs.argmax(1), true, 8)["f1_macro"]
    after = class_score((np.log(probs) + b).argmax(1), true, 8)["f1_macro"]
    assert after > before + 0.05


@pytest.fixture(scope="module")
def mtl(tmp_path_factory):
    root = tmp_path_factory.mktemp("post")
    cache, labels = make_mtl_cache(root, n_videos=5, n_frames=100, label_fraction=0.5)
    return root, cache, labels


def test_tuned_postprocessing_is_stored_and_used_by_evaluate_and_predict(mtl, tmp_path):
    root, cache, labels = mtl
    run = tmp_path / "run"
    cfg = RunConfig.from_dict({**BASE, "task": "mtl", "cache": str(cache), "labels": str(labels), "out": str(run),
                               "loss": "ce(weights=[4,1,1,1,1,1,1,1])+ccc+bce(pos_weight=4)",
                               "tune_thresholds": True, "tune_bias": True})
    m = train_run(cfg)
    post = json.loads((run / "metrics.json").read_text())["postprocess"]
    assert len(post["thresholds"]["au"]) == 12 and len(post["biases"]["expr"]) == 8
    assert any(t != 0.5 for t in post["thresholds"]["au"]) and any(b != 0 for b in post["biases"]["expr"])
    assert m["val"]["p_au"] > m["val_untuned"]["p_au"] and m["val"]["p_expr"] >= m["val_untuned"]["p_expr"]
    assert m["main"] == pytest.approx(m["val"]["p_mtl"]) and m["main_untuned"] == m["val_untuned"]["main"]
    assert evaluate_run(run)["p_mtl"] == pytest.approx(m["val"]["p_mtl"], abs=1e-6)
    predict_run(run, None, tmp_path / "pred", split="val")
    scored = score_predictions("mtl", tmp_path / "pred", labels, "val")
    assert scored["p_au"] == pytest.approx(m["val"]["p_au"], abs=1e-6)
    assert scored["p_expr"] == pytest.approx(m["val"]["p_expr"], abs=1e-6)
    assert scored["zero_division"] == 0 and scored["frames"] == "own"
    predict_run(run, None, tmp_path / "plain", split="val", au_threshold=0.5)
    assert score_predictions("mtl", tmp_path / "plain", labels, "val")["p_au"] == pytest.approx(
        m["val_untuned"]["p_au"], abs=1e-6)


def test_interpolation_is_applied_to_a_run_predictions(tmp_path):
    table = synth.random_table(3, [40, 30, 50], {synth.VISUAL: 6}, seed=2, invalid_p=0.25)
    lab = synth.random_labels(table.n_frames, seed=2)
    cfg = RunConfig.from_dict({**BASE, "task": "va", "loss": "ccc", "epochs": 1, "interpolate": "linear",
                               "save_predictions": True, "out": str(tmp_path / "run")})
    train_run(cfg, table, lab, splits=synth.splits_of(table, 1))
    df = pl.read_parquet(tmp_path / "run" / "predictions_val.parquet")
    sl = table.video_slice(table.videos[-1])
    valid = table.valid[synth.VISUAL][sl].numpy()
    ok = np.flatnonzero(valid)
    v = df["va_0"].to_numpy()
    inner = [i for i in np.flatnonzero(~valid) if ok[0] < i < ok[-1]]
    assert inner
    assert np.allclose(v[inner], np.interp(inner, ok, v[ok]), atol=1e-5)


def test_postprocessing_from_the_cli_and_as_grid_axes(mtl, tmp_path):
    root, cache, labels = mtl
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["train-head", "--task", "au", "--cache", str(cache), "--labels", str(labels),
                                   "--temporal", "mlp", "--epochs", "1", "--device", "cpu", "--no-plots",
                                   "--interpolate", "nearest", "--tune-thresholds", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["interpolate"] == "nearest"
    assert len(json.loads((out / "metrics.json").read_text())["postprocess"]["thresholds"]["au"]) == 12
    grid = grid_from_dict({"base": {**BASE, "task": "au", "epochs": 1},
                           "axes": {"interpolate": ["off", "linear"], "tune_thresholds": [False, True]}})
    res = run_grid(build_runs(grid, cache, labels), tmp_path / "grid", console=Console(quiet=True),
                   grid_meta=grid_meta(grid), progress=False)
    assert res.count("ok") == 4, [o.error for o in res.outcomes]
    tuned = [json.loads((tmp_path / "grid" / "runs" / o.name / "metrics.json").read_text()).get("postprocess")
             for o in res.outcomes]
    assert sum(p is not None for p in tuned) == 2
    with pytest.raises(ValueError, match="interpolate must be one of off, linear, nearest"):
        RunConfig.from_dict({"interpolate": "cubic"})
