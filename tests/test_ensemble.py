"""`affcli ensemble`: three seeds combined score at least their mean on validation, the folder is a run for predict /
evaluate / score (score of the files = metrics.json), weights fitted on validation or out-of-fold predictions, and
hostile input (missing feature sets, an existing or contended --out, mixed tasks) refused in one line."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from affcli.cli import app
from affcli.common.runs import read_json
from affcli.heads.config import RunConfig
from affcli.heads.infer.ensemble import build_ensemble
from affcli.heads.infer.predict import evaluate_run
from affcli.heads.infer.score_files import score_predictions
from affcli.heads.train.trainer import train_run
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

BASE = {"task": "expr", "epochs": 3, "device": "cpu", "window": 16, "stride": 8, "batch_size": 16, "d_model": 16,
        "plots": False, "warmup": 0, "tensorboard": False}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict:
    """A synthetic cache and three EXPR runs that differ in seed (one of them reads the visual features only)."""
    root = tmp_path_factory.mktemp("ens")
    cache, labels = make_synthetic(root, n_videos=6, n_frames=64, dims=(8, 6))
    runs = []
    for seed, feats in ((0, [VISUAL, AUDIO]), (1, [VISUAL, AUDIO]), (2, [VISUAL])):
        cfg = RunConfig.from_dict({**BASE, "features": feats, "cache": str(cache), "labels": str(labels), "seed": seed,
                                   "out": str(root / f"seed{seed}")})
        train_run(cfg)
        runs.append(root / f"seed{seed}")
    return {"root": root, "cache": cache, "labels": labels, "runs": runs}


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_mean_ensemble_scores_at_least_members_mean_and_is_a_run(seeds, tmp_path):
    out = tmp_path / "ens"
    res = _cli("ensemble", *map(str, seeds["runs"]), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "members' mean" in res.output and "seed2" in res.output
    m = read_json(out / "metrics.json")
    members = [read_json(r / "metrics.json")["main"] for r in seeds["runs"]]
    assert [x["main"] for x in m["members"]] == pytest.approx(members, abs=1e-9)
    assert m["main"] >= sum(members) / 3, (m["main"], members)
    assert read_json(out / "config.json")["kind"] == "ensemble"
    # evaluate and score treat it as a run: the same number as its metrics.json
    assert evaluate_run(out)["main"] == pytest.approx(m["main"], abs=1e-9)
    pred = _cli("predict", "--run", str(out), "--split", "val", "--out", str(tmp_path / "pred"))
    assert pred.exit_code == 0, pred.output
    assert score_predictions("expr", tmp_path / "pred", seeds["labels"], "val")["main"] == pytest.approx(m["main"], abs=1e-9)
    sc = _cli("score", "--task", "expr", "--pred", str(tmp_path / "pred"), "--labels", str(seeds["labels"]))
    assert sc.exit_code == 0 and json.loads(sc.output)["main"] == pytest.approx(m["main"], abs=1e-9)
    ev = _cli("evaluate", "--run", str(out))
    assert ev.exit_code == 0 and f"main {m['main']:.4f}" in ev.output


def test_weighted_and_vote(seeds, tmp_path):
    w = build_ensemble(seeds["runs"], tmp_path / "w", "weighted")
    assert w["weights_fitted_on"].startswith("validation split")
    assert sum(x["weight"] for x in w["members"]) == pytest.approx(1.0)
    assert w["main"] >= max(x["main"] for x in w["members"]) - 1e-12
    assert evaluate_run(tmp_path / "w")["main"] == pytest.approx(w["main"], abs=1e-9)
    v = build_ensemble(seeds["runs"], tmp_path / "v", "vote")
    assert v["method"] == "vote" and 0 <= v["main"] <= 1
    assert evaluate_run(tmp_path / "v")["main"] == pytest.approx(v["main"], abs=1e-9)


def test_weights_fitted_on_out_of_fold_predictions(seeds, tmp_path):
    from affcli.heads.train.folds import run_training

    runs = []
    for seed in (0, 1):
        cfg = RunConfig.from_dict({**BASE, "epochs": 1, "features": [VISUAL, AUDIO], "cache": str(seeds["cache"]),
                                   "labels": str(seeds["labels"]), "folds": 2, "out": str(tmp_path / f"cv{seed}"),
                                   "seed": 5, "lr": 1e-3 * (seed + 1)})
        run_training(cfg)
        runs.append(tmp_path / f"cv{seed}")
    r = build_ensemble(runs, tmp_path / "e", "weighted")
    assert r["weights_fitted_on"] == "out-of-fold predictions of the fold runs"
    assert [m["kind"] for m in r["members"]] == ["folds", "folds"]


def test_member_without_its_feature_sets_named_before_anything_runs(seeds, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(seeds["runs"][1], bad)
    cfg = read_json(bad / "config.json")
    cfg["features"] = [VISUAL, "ast:missing"]
    (bad / "config.json").write_text(json.dumps(cfg))
    res = _cli("ensemble", str(seeds["runs"][0]), str(bad), "--out", str(tmp_path / "e"))
    assert res.exit_code == 2 and "bad: ast:missing" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "e").exists()


def test_hostile_ensembles_refused_in_one_line(seeds, tmp_path):
    a, b, c = map(str, seeds["runs"])
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "metrics.json").write_text("{}")
    other = tmp_path / "va"
    shutil.copytree(seeds["runs"][1], other)
    cfg = read_json(other / "config.json")
    cfg["task"] = "va"
    (other / "config.json").write_text(json.dumps(cfg))
    cases = [((a, b, "--out", str(existing)), "already exists"),
             ((a, "--out", str(tmp_path / "one")), "at least two runs"),
             ((a, a, "--out", str(tmp_path / "dup")), "given twice"),
             ((a, str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")), "no config.json"),
             ((a, str(other), "--out", str(tmp_path / "y")), "different tasks"),
             ((a, b, "--out", str(tmp_path / "z"), "--method", "median"), "unknown ensemble method"),
             ((a, b, "--out", str(Path(a) / "inside")), "inside member run")]
    for args, needle in cases:
        res = _cli("ensemble", *args)
        assert res.exit_code == 2 and needle in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1, res.output
    assert read_json(existing / "metrics.json") == {} and sorted(p.name for p in existing.iterdir()) == ["metrics.json"]
    assert not any(tmp_path.glob(".*tmp*"))


def test_concurrent_ensembles_into_one_out(seeds, tmp_path):
    out = tmp_path / "race"
    results: list[object] = []

    def build() -> None:
        try:
            results.append(build_ensemble(seeds["runs"], out, "mean"))
        except ValueError as e:
            results.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r in results if isinstance(r, dict)]
    errors = [r for r in results if isinstance(r, ValueError)]
    assert len(ok) >= 1 and len(ok) + len(errors) == 2
    for e in errors:
        assert "--out" in str(e) and "\n" not in str(e)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json", "predictions_val.parquet"]
    assert read_json(out / "metrics.json")["main"] == ok[0]["main"]
    assert not any(tmp_path.glob(".race.tmp*"))
