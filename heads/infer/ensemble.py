"""`affcli ensemble RUN... --method mean|vote|weighted --out E`: several finished runs of one task (any features,
heads, seeds; single, fold or ensemble runs) made into one run folder that predict, evaluate, score, submit and
(when every member is causal) stream read like any run (heads.infer.runs).

The folder is written whole or not at all: it is built in a hidden sibling and renamed into place, so a kill or a
second `ensemble --out E` running at the same time never leaves a half folder, and an existing folder is never
written over.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from affcli.common.names import safe_name
from affcli.common.runs import write_json
from affcli.heads.config import RunConfig
from affcli.heads.infer.combine import check_method, combined_postprocess, fit_weights
from affcli.heads.infer.runs import ENSEMBLE_KEY, RunView, open_run

FITTED_ON_VAL = "validation split (the same split it is scored on: optimistic, as tuned thresholds are)"
FITTED_ON_OOF = "out-of-fold predictions of the fold runs"


def _member_views(runs: list[str | Path], cache: str | None, labels: str | None) -> list[RunView]:
    if len(runs) < 2:
        raise ValueError(f"ensemble: give at least two runs (got {len(runs)})")
    paths = [Path(r).resolve() for r in runs]
    dup = {p for p in paths if paths.count(p) > 1}
    if dup:
        raise ValueError(f"ensemble: run {sorted(dup)[0]} is given twice (use --method weighted to weight members)")
    views = []
    for p in paths:
        try:
            views.append(open_run(p, cache, labels))
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"ensemble member {p}: {e}") from None
    tasks = {v.cfg.task for v in views}
    if len(tasks) != 1:
        raise ValueError(f"ensemble: members predict different tasks ({', '.join(f'{v.path.name}: {v.cfg.task}' for v in views)})")
    return views


def missing_features(views: list[RunView], cache: str) -> list[str]:
    """'member: feature set' for every member feature set that the cache lacks (checked before anything runs)."""
    from affcli.cache.store import FeatureStore

    present = set(FeatureStore(cache, mode="r").feature_sets())
    return [f"{v.path.name}: {f}" for v in views for leaf in _leaf_views(v) for f in leaf.cfg.features
            if f not in present]


def _leaf_views(v: RunView) -> list[RunView]:
    return [v] if v.kind == "single" else [x for m in v.members for x in _leaf_views(m)]


def _check_out(out: Path, views: list[RunView]) -> None:
    safe_name(out.name, "ensemble --out folder name")
    if os.path.lexists(out) and not (out.is_dir() and not out.is_symlink() and not any(out.iterdir())):
        raise ValueError(f"ensemble --out {out}: already exists; choose a new folder (an ensemble never writes over "
                         f"a run)")
    inside = [v.path for v in views if out.resolve() == v.path or v.path in out.resolve().parents]
    if inside:
        raise ValueError(f"ensemble --out {out}: inside member run {inside[0]}")


def _oof_arrays(views: list[RunView]) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]] | None:
    """The members' out-of-fold predictions on the same frames (every member a fold run over the same pool), else
    None."""
    import polars as pl

    from affcli.heads.train.folds import OOF_FILE, frame_arrays

    if not all(v.kind == "folds" and (v.path / OOF_FILE).is_file() for v in views):
        return None
    frames = [pl.read_parquet(v.path / OOF_FILE).sort(["video", "frame"]) for v in views]
    keys = [f.select("video", "frame") for f in frames]
    if any(not k.equals(keys[0]) for k in keys[1:]):
        return None
    arrays = [frame_arrays(f, views[0].cfg.task) for f in frames]
    return [a[0] for a in arrays], arrays[0][1]


def build_ensemble(runs: list[str | Path], out: str | Path, method: str = "mean", cache: str | None = None,
                   labels: str | None = None, device: str | None = None) -> dict[str, Any]:
    """Check the members (same task, feature sets in the cache), combine them on the validation split (fitting
    weights with `weighted`), and write the ensemble run folder atomically; returns its metrics (members included)."""
    from affcli.heads.data.loading import prepare_data
    from affcli.heads.infer.evaluation import score
    from affcli.heads.infer.outputs import split_labels
    from affcli.heads.infer.predict import score_run

    check_method(method)
    out = Path(out)
    views = _member_views(runs, cache, labels)
    _check_out(out, views)
    first = views[0].cfg
    cache = cache or first.cache
    lost = missing_features(views, cache)
    if lost:
        raise ValueError(f"ensemble: {len(lost)} member feature set(s) missing from the cache {cache}: {'; '.join(lost)}")
    feats = list(dict.fromkeys(f for v in views for leaf in _leaf_views(v) for f in leaf.cfg.features))
    face = RunConfig.from_dict({"task": first.task, "cache": cache, "labels": labels or first.labels,
                                "splits": first.splits, "edition": first.edition, "features": feats,
                                "device": device or first.device, "skip_bad": first.skip_bad})
    face.check_paths()
    data = prepare_data(face)
    val = face.splits[1]
    weights = [1.0] * len(views)
    fitted_on = None
    if method == "weighted":
        oof = _oof_arrays(views)
        if oof is not None:
            weights, _ = fit_weights(face.task, oof[0], oof[1], face.edition, [v.post for v in views])
            fitted_on = FITTED_ON_OOF
        else:
            outs = [v.split_outputs(data, val) for v in views]
            weights, _ = fit_weights(face.task, [o[1] for o in outs], split_labels(data, outs[0][0]), face.edition,
                                     [v.post for v in views])
            fitted_on = FITTED_ON_VAL
    weights = [w / sum(weights) for w in weights]
    members = [{"run": str(v.path), "name": v.path.name, "kind": v.kind, "weight": w, "features": v.cfg.features}
               for v, w in zip(views, weights)]
    record = {"method": method, "members": members, "weights_fitted_on": fitted_on}
    config = {**face.with_resolved_paths().to_dict(), "kind": "ensemble", ENSEMBLE_KEY: record}
    ens = RunView(out, "ensemble", face, views, weights, method,
                  combined_postprocess(face.task, [v.post for v in views], weights, method))
    member_scores = [score_run(v, data, val) for v in views]
    rows, probs = ens.split_outputs(data, val)
    lab = split_labels(data, rows)
    metrics = score(face.task, probs, lab, face.edition, **ens.post)
    result = {"kind": "ensemble", "task": face.task, "method": method, "main": float(metrics["main"]),
              "val": metrics, "split": val, "weights_fitted_on": fitted_on, "postprocess": ens.post,
              "members": [{"run": m["run"], "name": m["name"], "kind": m["kind"], "weight": m["weight"],
                           "main": float(s["main"]), "val": s} for m, s in zip(members, member_scores)],
              "members_mean": float(np.mean([s["main"] for s in member_scores]))}
    _write_folder(out, config, result, data, rows, probs, lab)
    return result


def _write_folder(out: Path, config: dict, metrics: dict, data: Any, rows: np.ndarray, probs: dict,
                  lab: dict) -> None:
    """config.json, metrics.json and predictions_val.parquet in a hidden sibling, then one rename into place (refused
    if `out` appeared meanwhile: another ensemble got there first)."""
    from affcli.heads.data.abaw_io import prediction_frame

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        write_json(tmp / "config.json", config)
        write_json(tmp / "metrics.json", metrics)
        prediction_frame(data.videos, data.starts, rows, probs, lab).write_parquet(tmp / "predictions_val.parquet")
        if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
            out.rmdir()
        try:
            os.rename(tmp, out)
        except OSError:
            raise ValueError(f"ensemble --out {out}: appeared while this ensemble was built (another `ensemble "
                             f"--out` at the same time?); nothing written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensemble_table(result: dict[str, Any]) -> Any:
    """A rich Table: each member's main metric and weight, then the ensemble's."""
    from rich.table import Table

    t = Table(title=f"{result['task']} ensemble ({result['method']}) on the {result['split']} split")
    for c in ("run", "kind", "weight", "main"):
        t.add_column(c, justify="right" if c in ("weight", "main") else "left")
    for m in result["members"]:
        t.add_row(m["name"], m["kind"], f"{m['weight']:.3f}", f"{m['main']:.4f}")
    t.add_row("members' mean", "", "", f"{result['members_mean']:.4f}", style="dim")
    t.add_row("[bold]ensemble[/bold]", "ensemble", "", f"[bold]{result['main']:.4f}[/bold]")
    return t
