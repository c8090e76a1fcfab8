"""K-fold cross-validation of one run config (`train-head --folds K [--fold-by FILE]`): the labelled videos of the
train and validation splits are pooled and split into K folds by group (a video's `_left`/`_right` ids together, or
the groups of a --fold-by file), deterministically by seed; one sub-run per fold, out-of-fold predictions for every
labelled frame, and metrics per fold with their mean ± sample std.

The fold run folder is a run (config.json kind 'folds'): predict, evaluate and ensemble read it as the mean of its
fold models (heads.infer.runs).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from affcli.common.runs import config_hash, write_json
from affcli.common.vocab import subject_video
from affcli.heads.config import RunConfig
from affcli.heads.data.dataset import Data
from affcli.heads.infer.runs import fold_dir
from affcli.heads.tasks import get_task

FOLDS_FILE = "folds.json"
FOLD_FILE = "fold.json"
OOF_FILE = "predictions_oof.parquet"


def read_fold_by(path: str | Path) -> dict[str, str]:
    """{video: group} from a text file of `video,group` lines (a tab or spaces also separate; `#` comments, blank
    lines and a `video,group` header skipped); one-line ValueError naming the file and line of any problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--fold-by {path}: not a file")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"--fold-by {path}: not a text file") from None
    out: dict[str, str] = {}
    for i, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        cells = [c.strip() for c in (text.split(",") if "," in text else text.split())]
        if len(cells) != 2 or not all(cells):
            raise ValueError(f"--fold-by {path}: line {i}: expected `video,group`, got {line.strip()!r}")
        if not out and [c.lower() for c in cells] == ["video", "group"]:
            continue
        video, group = cells
        if out.get(video, group) != group:
            raise ValueError(f"--fold-by {path}: line {i}: video {video!r} is given two groups "
                             f"({out[video]!r} and {group!r})")
        out[video] = group
    if not out:
        raise ValueError(f"--fold-by {path}: no `video,group` lines")
    return out


def video_groups(pool: list[str], mapping: dict[str, str] | None = None, source: str = "--fold-by") -> dict[str, str]:
    """{pooled video: group}: by default a video's own id with `_left`/`_right` removed (the sides of one video stay
    together); with a mapping, its entries by the same id. Unknown videos in the mapping, pooled videos it leaves
    out, and two sides of one video in different groups are refused in one line."""
    subjects = {v: subject_video(v) for v in pool}
    if mapping is None:
        return subjects
    by_subject: dict[str, str] = {}
    for key, group in mapping.items():
        s = subject_video(key)
        if by_subject.get(s, group) != group:
            raise ValueError(f"{source}: {key!r} and another id of video {s!r} name different groups "
                             f"({by_subject[s]!r}, {group!r}); a video's sides stay in one fold")
        by_subject[s] = group
    known = set(subjects.values())
    unknown = sorted(s for s in by_subject if s not in known)
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} video(s) are not labelled videos of the pooled splits "
                         f"(e.g. {unknown[0]!r}; the pool holds {len(pool)} videos such as {pool[0]!r})")
    missing = sorted(v for v, s in subjects.items() if s not in by_subject)
    if missing:
        raise ValueError(f"{source}: {len(missing)} pooled video(s) have no group (e.g. {missing[0]!r}); "
                         f"give every labelled video of both splits a line")
    return {v: by_subject[s] for v, s in subjects.items()}


def assign_folds(groups: dict[str, str], k: int, seed: int, weights: dict[str, int] | None = None) -> list[list[str]]:
    """K lists of videos: the groups in a seeded random order, each put into the fold with the fewest labelled
    frames so far (ties: the lowest fold), so folds are balanced and the same seed gives the same folds."""
    names = sorted(set(groups.values()))
    if k < 2:
        raise ValueError(f"--folds must be >= 2, not {k}")
    if k > len(names):
        raise ValueError(f"--folds {k}: only {len(names)} group(s) of videos to split (e.g. {names[0]!r}); "
                         f"K must be at most the number of groups")
    members: dict[str, list[str]] = {g: [] for g in names}
    for v, g in groups.items():
        members[g].append(v)
    load = np.zeros(k, np.int64)
    folds: list[list[str]] = [[] for _ in range(k)]
    for i in np.random.default_rng(seed).permutation(len(names)):
        g = names[int(i)]
        f = int(np.argmin(load))
        folds[f] += members[g]
        load[f] += sum((weights or {}).get(v, 1) for v in members[g])
    return [sorted(f) for f in folds]


def labelled_frames(data: Data, task: str) -> dict[str, int]:
    """{video: frames with any label of the task} over the rows of `data`."""
    keys = [o.key for o in get_task(task).outputs]
    any_mask = None
    for k in keys:
        m = data.labels[f"mask_{k}"]
        m = m.flatten(1).any(1) if m.dim() > 1 else m
        any_mask = m if any_mask is None else any_mask | m
    counts = any_mask.cpu().numpy() if any_mask is not None else np.zeros(int(sum(data.lengths)), bool)
    return {v: int(counts[int(s):int(s + n)].sum()) for v, s, n in zip(data.videos, data.starts, data.lengths)}


def fold_data(data: Data, cfg: RunConfig, train: list[str], val: list[str]) -> Data:
    """`data` with its split names (cfg.splits) re-pointed at one fold's videos (tensors shared, nothing copied)."""
    index = {v: i for i, v in enumerate(data.videos)}
    return dataclasses.replace(data, splits={cfg.splits[0]: [index[v] for v in train],
                                             cfg.splits[1]: [index[v] for v in val]})


def run_training(cfg: RunConfig, data: Data | None = None, progress: bool = False,
                 epoch_hook: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """One run config trained: K fold sub-runs with cfg.folds, else one run (heads.train.trainer.train_run)."""
    from affcli.heads.train.trainer import train_run

    if cfg.folds:
        return train_folds(cfg, data, progress, epoch_hook)
    return train_run(cfg, data=data, progress=progress, epoch_hook=epoch_hook)


def train_folds(cfg: RunConfig, data: Data | None = None, progress: bool = False,
                epoch_hook: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train one sub-run per fold into cfg.out/fold<k>; write folds.json (the assignment), the out-of-fold
    predictions and metrics.json (each fold, mean ± std, the pooled out-of-fold score, the official validation
    split's score when it is one of the folds); returns those metrics."""
    from affcli.heads.data.loading import cached_modalities, prepare_data
    from affcli.heads.train.trainer import train_run
    from affcli.heads.train.tracking import mlflow_module

    t0 = time.perf_counter()
    cfg.validate()
    mapping = read_fold_by(cfg.fold_by) if cfg.fold_by else None
    if cfg.mlflow:
        mlflow_module()
    if data is None:
        cfg.resolve(cached_modalities(cfg) if cfg.cache else None)
        data = prepare_data(cfg)
    tr, va = cfg.splits
    official = [data.videos[i] for i in data.splits[va]]
    pool = list(dict.fromkeys(data.videos[i] for i in [*data.splits[tr], *data.splits[va]]))
    groups = video_groups(pool, mapping, f"--fold-by {cfg.fold_by}")
    frames = labelled_frames(data, cfg.task)
    folds = assign_folds(groups, cfg.folds, cfg.seed, frames)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"k": cfg.folds, "seed": cfg.seed, "fold_by": cfg.fold_by, "file": FOLDS_FILE,
            "assignment_hash": config_hash({"folds": folds})}
    write_json(out / FOLDS_FILE, {**info, "folds": folds, "groups": groups,
                                  "fold_of": {v: i for i, f in enumerate(folds) for v in f},
                                  "labelled_frames": [sum(frames[v] for v in f) for f in folds]})
    base = cfg.with_resolved_paths()
    write_json(out / "config.json", {**base.to_dict(), "features": list(data.features), "kind": "folds",
                                     "fold_info": info})
    name = cfg.name or out.name
    results = []
    for k, val in enumerate(folds):
        train = [v for v in pool if v not in set(val)]
        sub = dataclasses.replace(cfg, folds=0, fold_by=None, out=str(fold_dir(out, k)), name=f"{name}/fold{k}",
                                  save_predictions=True)
        hook = None if epoch_hook is None else (lambda e, m, k=k: epoch_hook(k * cfg.epochs + e, m))
        write_json(fold_dir(out, k) / FOLD_FILE, {"fold": k, "of": cfg.folds, "val_videos": val, "train_videos": train})
        results.append(train_run(sub, data=fold_data(data, cfg, train, val), progress=progress, epoch_hook=hook))
    metrics = fold_metrics(out, cfg, results, folds, official)
    metrics["timings"] = {"total_s": time.perf_counter() - t0}
    write_json(out / "metrics.json", metrics)
    return metrics


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def fold_metrics(out: Path, cfg: RunConfig, results: list[dict[str, Any]], folds: list[list[str]],
                 official: list[str]) -> dict[str, Any]:
    """metrics.json of a fold run: per fold, mean and sample std (ddof=1) of main and of each validation metric,
    the score of the pooled out-of-fold predictions and, when one fold is exactly the official validation split,
    its score beside them."""
    vals = [_numbers(r["val"]) for r in results]
    keys = [k for k in vals[0] if all(k in v for v in vals)]
    mains = np.array([float(r["main"]) for r in results])
    std = (lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else 0.0)
    m: dict[str, Any] = {
        "kind": "folds", "task": cfg.task, "k": len(folds), "seed": cfg.seed,
        "main": float(mains.mean()), "main_std": std(mains),
        "val": {k: float(np.mean([v[k] for v in vals])) for k in keys},
        "val_std": {k: std(np.array([v[k] for v in vals])) for k in keys},
        "folds": [{"fold": i, "main": float(r["main"]), "val": vals[i], "best_epoch": r["best_epoch"],
                   "epochs": r["epochs"], "videos": len(folds[i])} for i, r in enumerate(results)],
        "std_note": "sample std (ddof=1) over folds",
    }
    m["oof"] = oof_score(out, cfg, len(folds))
    same = [i for i, f in enumerate(folds) if set(f) == set(official)]
    if same:
        i = same[0]
        m["official_val"] = {"fold": i, "main": float(results[i]["main"]), "val": vals[i]}
    return m


def oof_predictions(out: str | Path, k: int) -> pl.DataFrame:
    """The out-of-fold predictions of a fold run: each fold's validation predictions, with a `fold` column."""
    parts = []
    for i in range(k):
        p = fold_dir(out, i) / "predictions_val.parquet"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (fold {i} did not finish)")
        parts.append(pl.read_parquet(p).with_columns(fold=pl.lit(i, pl.Int32)))
    return pl.concat(parts, how="vertical")


def frame_arrays(df: pl.DataFrame, task: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(probabilities/values, labels with mask_<key>) of a predictions parquet (heads.data.abaw_io.prediction_frame)."""
    probs, labels = {}, {}
    for o in get_task(task).outputs:
        probs[o.key] = df.select([f"{o.key}_{j}" for j in range(o.dim)]).to_numpy().astype(np.float32)
        if o.kind == "class":
            labels[o.key] = df[f"label_{o.key}"].to_numpy()
        else:
            labels[o.key] = df.select([f"label_{o.key}_{j}" for j in range(o.dim)]).to_numpy()
        mask = [c for c in df.columns if c == f"mask_{o.key}" or c.startswith(f"mask_{o.key}_")]
        labels[f"mask_{o.key}"] = df.select(mask).to_numpy().all(1)
    return probs, labels


def oof_score(out: Path, cfg: RunConfig, k: int) -> dict[str, Any]:
    """Write predictions_oof.parquet and score it: each fold's hard predictions with its own tuned post-processing,
    pooled over all labelled frames."""
    from affcli.heads.infer.evaluation import hard_predictions, score_task
    from affcli.heads.infer.postprocess import load_postprocess

    df = oof_predictions(out, k)
    df.write_parquet(out / OOF_FILE)
    hard: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[np.ndarray]] = {}
    for i in range(k):
        probs, lab = frame_arrays(df.filter(pl.col("fold") == i), cfg.task)
        for key, a in hard_predictions(cfg.task, probs, **load_postprocess(fold_dir(out, i))).items():
            hard.setdefault(key, []).append(a)
        for key, a in lab.items():
            labels.setdefault(key, []).append(a)
    s = score_task(cfg.task, {k2: np.concatenate(v) for k2, v in hard.items()},
                   {k2: np.concatenate(v) for k2, v in labels.items()}, cfg.edition)
    return {k2: v for k2, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
