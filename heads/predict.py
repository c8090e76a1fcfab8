"""Inference of a finished run over whole videos (ABAW files via abaw_io) and re-scoring of its val split."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from affcli.common.names import safe_name
from affcli.common.runs import read_json, write_json
from affcli.heads.artifacts import load_model, prediction_frame
from affcli.heads.config import RunConfig
from affcli.heads.data import Data
from affcli.heads.infer import predict_rows
from affcli.heads.evaluation import hard_predictions
from affcli.heads.postprocess import finish_rows, load_postprocess


def run_config(run_dir: str | Path, **overrides: Any) -> RunConfig:
    """The RunConfig a run was trained with (config.json, flat or nested), with non-None top-level overrides."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError("no config.json (not a train-head run folder)")
    d = read_json(path)
    d.update({k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items() if v is not None})
    return RunConfig.from_dict(d)


def check_run_paths(cfg: RunConfig, labels: bool = True) -> None:
    """Refuse a run whose stored (or overriding) cache or label root is missing, naming the option that fixes it."""
    need = {"cache": cfg.cache, **({"labels": cfg.labels} if labels else {})}
    for key, p in need.items():
        if not p:
            raise ValueError(f"no {key} in config.json: give --{key}")
        if "://" not in p and not (Path(p).is_dir() if key == "labels" else Path(p).exists()):
            raise FileNotFoundError(f"{key} {p} not found (from config.json unless --{key} is given)")


def predict_run(run_dir: str | Path, cache: str | Path | None, out_dir: str | Path, split: str | None = None,
                videos: list[str] | None = None, style: str = "single-file", device: str | None = None,
                au_threshold: float | None = None, labels: str | Path | None = None, smooth: int | None = None,
                skip_bad: bool = False) -> list[Path]:
    """Predict every frame of the chosen videos (all cached ones by default) and write ABAW-format files.

    `smooth` (frames; default the run's) averages predictions over +-smooth frames within each video; `cache` and
    `labels` (needed with `split`) default to the run's. Per-video files are named by `safe_name` (ids are data);
    `skip_bad` leaves out videos whose cached arrays fail their checks, with a warning line each. The run's stored
    post-processing applies (interpolation, tuned AU thresholds and EXPR biases); `au_threshold` replaces the tuned
    thresholds (default: the run's, else 0.5).
    """
    import torch

    from affcli.cache import load_table
    from affcli.cache.store import FeatureStore
    from affcli.heads.abaw_io import write_predictions
    from affcli.common.device import resolve_device

    cfg = run_config(run_dir, cache=cache, labels=labels, device=device, skip_bad=skip_bad or None)
    check_run_paths(cfg, labels=split is not None and videos is None)
    cache = cfg.cache
    dev = resolve_device(cfg.device)
    model = load_model(run_dir, dev)
    ids = {v: v for v in videos} if videos is not None else None
    if ids is None and split is not None:
        from affcli.heads.loading import split_label_videos

        ids = split_label_videos(cfg, split)
    if ids is None:
        store = FeatureStore(cache, mode="r")
        ids = {v: v for v in sorted(set.intersection(*[set(store.videos(f)) for f in cfg.features]))}
    if not ids:
        raise ValueError(f"{cache}: no videos to predict (split={split!r})")
    if style == "per-video":
        for label_id in ids:
            safe_name(label_id, f"{cache}: video id")
    table = load_table(cache, cfg.features, videos=list(dict.fromkeys(ids.values())), skip_bad=cfg.skip_bad)
    ids = {k: v for k, v in ids.items() if v in table.videos}
    data = Data.from_table(table, {}, {"predict": list(table.videos)}, cfg.task, cfg.features, device=dev)
    with torch.no_grad():
        rows, preds = predict_rows(model, data, data.splits["predict"], cfg.window, cfg.eval_stride,
                                   max(cfg.batch_size, 256), cfg.amp)
    preds = finish_rows(preds, {m: v[rows] for m, v in data.valid.items()}, data.lengths, cfg.task, cfg.interpolate,
                        cfg.smooth if smooth is None else smooth)
    rows_np = rows.cpu().numpy()
    probs = {k: v.float().cpu().numpy() for k, v in preds.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prediction_frame(data.videos, data.starts, rows_np, probs).write_parquet(out_dir / f"predictions_{cfg.task}.parquet")
    post = load_postprocess(run_dir)
    if au_threshold is not None:
        post.pop("thresholds", None)
    hard = hard_predictions(cfg.task, probs, 0.5 if au_threshold is None else au_threshold, **post)
    per_video = {}
    for label_id, v in ids.items():
        i = data.videos.index(v)
        pos = np.searchsorted(rows_np, np.arange(int(data.starts[i]), int(data.starts[i] + data.lengths[i])))
        per_video[label_id] = {k: a[pos] for k, a in hard.items()}
    return write_predictions(out_dir, cfg.task, per_video, style=style)


def evaluate_run(run_dir: str | Path, cache: str | Path | None = None, labels: str | Path | None = None,
                 split: str | None = None, device: str | None = None, smooth: int | None = None,
                 skip_bad: bool = False) -> dict:
    """Re-score a run's checkpoint on its val split (or `split`), optionally with prediction smoothing; writes
    eval_<split>.json (eval_<split>_smooth<k>.json) beside it. Only that split's labels are read, so `labels` may be
    a flat folder of its per-video files."""
    from affcli.heads.trainer import evaluate, prepare_data

    cfg = run_config(run_dir, cache=cache, labels=labels, device=device, smooth=smooth, skip_bad=skip_bad or None)
    check_run_paths(cfg)
    split = split or cfg.splits[1]
    cfg.splits = [split, split]
    data = prepare_data(cfg)
    model = load_model(run_dir, data.device)
    metrics, _, _ = evaluate(model, data, cfg, split, post=load_postprocess(run_dir))
    name = f"eval_{split}" + (f"_smooth{smooth}" if smooth else "")
    write_json(Path(run_dir) / f"{name}.json", metrics)
    return metrics
