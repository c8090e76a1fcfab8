"""`affcli score`: ABAW prediction files on disk against the label files of a split, with the task's official metrics
(heads.evaluation scores arrays; heads.metrics holds the formulas)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

from affcli.heads.data.abaw_io import read_prediction_table, single_file_name
from affcli.heads.errors import LabelError
from affcli.heads.infer.evaluation import score_task
from affcli.heads.data.labels import load_labels
from affcli.heads.tasks import Task, get_task


def _dense(t: Task) -> bool:
    """Labels with one row per frame of every video (per-video files), so prediction rows are counted against them."""
    return t.labels.layout == "per-video"


def _pred_file(pred_path: Path, task: str | Task, video: str) -> Path:
    """The file that holds a video's predictions (the single file, or <id>.txt of a per-video folder)."""
    p = Path(pred_path)
    if p.is_file():
        return p
    return p / single_file_name(task) if (p / single_file_name(task)).is_file() else p / f"{video}.txt"


def _match_videos(labels: pl.DataFrame, preds: pl.DataFrame, pred_path: Path) -> pl.DataFrame:
    """Label video -> prediction id: the label id itself, else its feature video (`_left`/`_right` stripped)."""
    have = set(preds["video"].unique().to_list())
    per = labels.group_by("video", maintain_order=True).agg(pl.col("feature_video").first(),
                                                           pl.col("source").first().cast(pl.String), n_label=pl.len())
    pv = [v if v in have else (f if f in have else None) for v, f in zip(per["video"], per["feature_video"])]
    per = per.with_columns(pred_video=pl.Series(pv, dtype=pl.String))
    missing = per.filter(pl.col("pred_video").is_null())
    if missing.height:
        raise LabelError(pred_path, f"no predictions for {missing.height} of {per.height} labelled videos "
                                    f"(e.g. {missing['video'][0]!r}, labels in {missing['source'][0]})")
    return per


def _check_counts(per: pl.DataFrame, preds: pl.DataFrame, pred_path: Path, task: Task, tolerance: int) -> None:
    counts = preds.group_by("video").agg(n_pred=pl.len()).rename({"video": "pred_video"})
    per = per.join(counts, on="pred_video", how="left")
    bad = per.filter((pl.col("n_pred").cast(pl.Int64) - pl.col("n_label").cast(pl.Int64)).abs() > tolerance)
    if bad.height:
        r = bad.row(0, named=True)
        raise LabelError(_pred_file(pred_path, task, r["pred_video"]),
                         f"{r['n_pred']} prediction rows for {r['pred_video']!r} but the label file {r['source']} "
                         f"has {r['n_label']} rows (tolerance {tolerance})")


def score_predictions(task: str | Task, pred_path: Path, labels_root: Path, split: str = "val",
                      edition: str = "abaw3+", tolerance: int = 0, zero_division: int = 0, frames: str = "own") -> dict:
    """Official metrics of ABAW prediction files (either style) on a labelled split, as a JSON-able dict.

    Every labelled video needs predictions; per-video tasks need one row per label row (up to `tolerance` rows
    short: the last prediction is carried; longer: extra rows ignored); sparse tasks (MTL, LSD) need every
    labelled frame. `labels_root` is the ABAW folder, a challenge folder or a flat folder of the split's txt files.
    The convention (heads.evaluation.score_task) is part of the result: `zero_division` and `frames` (own|complete).
    """
    t = get_task(task) if isinstance(task, str) else task
    labels = load_labels(Path(labels_root), t, split)
    preds = read_prediction_table(Path(pred_path), t)
    per = _match_videos(labels, preds, Path(pred_path))
    if _dense(t):
        _check_counts(per, preds, Path(pred_path), t, tolerance)
    cols = t.columns
    p = preds.rename({c: f"{c}_pred" for c in cols}).rename({"video": "pred_video"})
    df = (labels.join(per.select("video", "pred_video"), on="video", how="left")
          .join(p.unique(["pred_video", "frame"], keep="first", maintain_order=True), on=["pred_video", "frame"],
                how="left"))
    pcols = [f"{c}_pred" for c in cols]
    if _dense(t):
        df = df.sort(["video", "frame"]).with_columns(pl.col(pcols).forward_fill().over("video"))
    miss = df.filter(pl.col(pcols[0]).is_null())
    if miss.height:
        r = miss.row(0, named=True)
        raise LabelError(_pred_file(Path(pred_path), t, r["pred_video"]),
                         f"no prediction for {miss.height} labelled frames (e.g. {r['pred_video']!r} frame "
                         f"{r['frame'] + 1:05d})")
    truth, pred = {}, {}
    for o in t.outputs:
        y = df.select(o.columns).to_numpy()
        q = df.select([f"{c}_pred" for c in o.columns]).to_numpy()
        truth[o.key], pred[o.key] = (y[:, 0], q[:, 0]) if o.kind == "class" else (y, q)
        truth[f"mask_{o.key}"] = df[f"mask_{o.key}"].to_numpy().astype(bool)
    out = score_task(t, pred, truth, edition, zero_division, frames)
    return {"task": t.name, "edition": edition, "split": split, "zero_division": zero_division, "frames": frames,
            "n_videos": per.height, "n_frames": df.height,
            **{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}}


def score_command(task: str, pred: Path, labels: Path, split: str = "val", edition: str = "abaw3+",
                  tolerance: int = 0, zero_division: int = 0, frames: str = "own") -> int:
    """Body of `affcli score`: print the metrics as JSON (exit 0) or a one-line error on stderr (exit 2)."""
    try:
        result = score_predictions(task, pred, labels, split, edition, tolerance, zero_division, frames)
    except (LabelError, ValueError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0
