"""Distillation from incomplete labels: teachers' soft targets cached beside the features and reused, the student
beats the same student on its sparse labels alone, the distill loss's options, `score --task mtl` conventions,
the regime from the CLI and inside an ablation grid."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from affcli.cache.teacher import read_targets, teachers
from affcli.cli import app
from affcli.heads.train import teacher as teacher_mod
from affcli.heads.ablate import build_runs, grid_from_dict, grid_meta, run_grid
from affcli.heads.config import RunConfig
from affcli.heads.infer.evaluation import score_task
from affcli.heads.losses import LossContext, build_loss
from affcli.heads.train.teacher import ensure_targets, teacher_fingerprint
from affcli.heads.train.trainer import train_run
from affcli.synthetic.mtl import make_mtl_cache

torch.set_num_threads(1)
TASKS = ("expr", "va", "au")
BASE = dict(temporal="mlp", window=16, stride=8, batch_size=32, d_model=32, epochs=6, patience=100, lr=3e-3,
            warmup=0, device="cpu", plots=False, save_predictions=False)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """A learnable MTL cache whose train frames keep a tenth of each task's labels, plus one finished single-task
    teacher per task trained on the complete per-video labels."""
    root = tmp_path_factory.mktemp("mtl")
    cache, labels = make_mtl_cache(root, n_videos=6, n_frames=120, label_fraction=0.1)
    base = dict(BASE, cache=str(cache), labels=str(labels))
    runs = {t: root / "teachers" / t for t in TASKS}
    quality = {t: train_run(RunConfig.from_dict({**base, "task": t, "out": str(runs[t])}))["main"] for t in TASKS}
    return root, cache, base, runs, quality


def _student(ds, name, **kw):
    root, _, base, runs, _ = ds
    return train_run(RunConfig.from_dict({**base, "task": "mtl", "out": str(root / name), **kw}))


def test_student_with_distillation_beats_the_tenth_alone(ds):
    _, _, _, runs, quality = ds
    alone = _student(ds, "alone")
    dist = _student(ds, "dist", distill_from=",".join(str(runs[t]) for t in TASKS))
    assert dist["history"][0]["terms"]["distill"] > 0
    assert dist["main"] > alone["main"] + 0.1, (dist["main"], alone["main"])
    for t in TASKS:
        assert quality[t] > alone["val"][f"p_{t}"], t
    assert dist["val"]["p_expr"] > alone["val"]["p_expr"] and dist["val"]["p_va"] > alone["val"]["p_va"]
    assert dist["val"]["p_au"] > alone["val"]["p_au"] - 0.03


def test_teacher_targets_are_cached_once_and_reused(ds, monkeypatch, tmp_path):
    _, cache, _, runs, _ = ds
    first = _student(ds, "reuse1", distill_from=[str(runs["expr"])], distill_weight=0.5)
    key = teacher_mod.teacher_fingerprint(runs["expr"], cache)
    from affcli.cache.teacher import teacher_key

    k = teacher_key(key)
    cached = read_targets(cache, k)
    assert teachers(cache)[k]["videos"] == 6 and len(cached.videos()) == 6
    stamps = {v: cached.attrs(v)["written"] for v in cached.videos()}
    probs = cached.read(cached.videos()[0])["expr"]
    assert probs.shape == (120, 8) and np.allclose(probs.sum(1), 1, atol=1e-4)

    def no_predict(*a, **kw):
        raise AssertionError("teacher targets were recomputed")

    monkeypatch.setattr(teacher_mod, "predict_teacher", no_predict)
    again = _student(ds, "reuse2", distill_from=[str(runs["expr"])], distill_weight=0.5)
    assert again["main"] == first["main"]
    assert {v: read_targets(cache, k).attrs(v)["written"] for v in cached.videos()} == stamps
    moved = tmp_path / "moved"
    shutil.copytree(runs["expr"], moved)
    assert ensure_targets(cache, moved, cached.videos()) == (k, 0)
    monkeypatch.undo()
    train_run(RunConfig.from_dict({**ds[2], "task": "expr", "out": str(moved), "epochs": 1, "seed": 1}))
    k2, computed = ensure_targets(cache, moved, cached.videos())
    assert k2 != k and computed == 6
    assert teacher_fingerprint(moved, cache)["checkpoint_sha256"] != key["checkpoint_sha256"]


def test_distill_loss_options_weights_and_kinds():
    n = 40
    g = torch.Generator().manual_seed(0)
    t = {"expr": torch.softmax(torch.randn(n, 8, generator=g), -1), "va": torch.rand(n, 2, generator=g) * 2 - 1,
         "au": torch.rand(n, 12, generator=g)}
    ctx = LossContext("mtl", 4, teacher=lambda runs: t, distill_from=("a", "b"))
    idx = torch.arange(n).view(4, 10)
    y = {"_idx": idx, "_real": torch.ones(4, 10, dtype=torch.bool),
         **{f"mask_{k}": torch.zeros(4, 10, dtype=torch.bool) for k in TASKS}}
    exact = {"expr": torch.log(t["expr"][idx]), "va": t["va"][idx], "au": torch.logit(t["au"][idx])}
    for reg in ("mse", "ccc"):
        v, _ = build_loss(f"distill(reg='{reg}')", ctx)(exact, y)
        assert float(v) == pytest.approx(float(build_loss("distill(weights={'va': 0, 'expr': 0})", ctx)(exact, y)[0]),
                                         abs=1e-4)
    worse = dict(exact, va=exact["va"] + 0.3)
    only_va = build_loss("distill(weights=[1, 0, 0])", ctx)
    assert float(only_va(worse, y)[0]) == pytest.approx(0.09, rel=1e-4) and float(only_va(exact, y)[0]) < 1e-8
    labelled = dict(y, mask_va=torch.ones(4, 10, dtype=torch.bool))
    assert float(only_va(worse, labelled)[0]) == 0.0
    with pytest.raises(ValueError, match="weights name 'pose'"):
        build_loss("distill(weights={'pose': 1})", ctx)
    with pytest.raises(ValueError, match="no teacher; give --distill-from"):
        build_loss("distill", LossContext("mtl", 4, teacher=lambda runs: t))


def test_loss_gets_a_distill_term_from_distill_from():
    cfg = RunConfig.from_dict({"task": "mtl", "distill_from": "a, b", "distill_weight": 0.3})
    assert cfg.distill_from == ["a", "b"]
    assert teacher_mod.loss_with_distill(cfg) == "ce(weights=auto)+ccc+bce(pos_weight=auto)+0.3*distill"
    named = RunConfig.from_dict({"task": "mtl", "distill_from": ["a"], "loss": "ce+0.5*distill(temperature=4)"})
    assert teacher_mod.loss_with_distill(named) == named.loss
    with pytest.raises(ValueError, match="already has a distill term"):
        teacher_mod.loss_with_distill(RunConfig.from_dict({**named.to_dict(), "distill_weight": 2.0}))


def test_mtl_score_conventions():
    rng = np.random.default_rng(0)
    n = 200
    lab = {"va": rng.uniform(-1, 1, (n, 2)), "expr": rng.integers(0, 7, n), "au": rng.integers(0, 2, (n, 12))}
    lab["expr"][:60], lab["va"][60:100] = -1, -5
    lab["au"][:, 11] = 0
    pred = {"va": lab["va"] + rng.normal(0, 0.3, (n, 2)), "expr": rng.integers(0, 7, n), "au": lab["au"].copy()}
    own, one = score_task("mtl", pred, lab), score_task("mtl", pred, lab, zero_division=1)
    assert one["f1_per_class"][7] == 1.0 and own["f1_per_class"][7] == 0.0
    assert one["f1_per_au"][11] == 1.0 and own["f1_per_au"][11] == 0.0
    assert one["p_mtl"] > own["p_mtl"]
    full = np.arange(100, n)
    complete = score_task("mtl", pred, lab, frames="complete")
    sub = score_task("mtl", {k: v[full] for k, v in pred.items()}, {k: v[full] for k, v in lab.items()})
    assert complete["p_mtl"] == pytest.approx(sub["p_mtl"]) and complete["n_expr"] == len(full)
    assert own["n_expr"] == n - 60
    with pytest.raises(ValueError, match="frames must be one of own, complete"):
        score_task("mtl", pred, lab, frames="all")


def test_regime_from_the_cli_and_in_a_grid(ds, tmp_path):
    root, cache, base, runs, _ = ds
    out = tmp_path / "cli"
    args = ["train-head", "--task", "mtl", "--cache", str(cache), "--labels", base["labels"], "--temporal", "mlp",
            "--epochs", "1", "--device", "cpu", "--no-plots", "--distill-from", f"{runs['expr']},{runs['va']}",
            "--distill-weight", "0.5", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["distill_from"] == [str(runs["expr"].resolve()), str(runs["va"].resolve())]
    assert "distill" in json.loads((out / "metrics.json").read_text())["history"][0]["terms"]
    n_cached = len(teachers(cache))
    grid = grid_from_dict({"base": {**BASE, "task": "mtl", "epochs": 1, "distill_from": [str(runs["au"])]},
                           "axes": {"distill_weight": [0.0, 1.0]}})
    res = run_grid(build_runs(grid, cache, base["labels"]), tmp_path / "grid", console=Console(quiet=True),
                   grid_meta=grid_meta(grid), progress=False)
    assert res.count("ok") == 2, [o.error for o in res.outcomes]
    mains = [json.loads((tmp_path / "grid" / "runs" / o.name / "metrics.json").read_text()) for o in res.outcomes]
    assert {m["history"][0]["terms"]["distill"] > 0 for m in mains} == {True}
    assert len(teachers(cache)) <= n_cached + 1
