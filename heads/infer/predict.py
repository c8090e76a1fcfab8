"""Inference of a finished run over whole videos (ABAW files via abaw_io) and re-scoring of its val split."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from affcli.common.cluster import ClusterOptions, Progress, map_videos
from affcli.common.names import safe_name
from affcli.common.runs import write_json
from affcli.heads.data.abaw_io import prediction_frame
from affcli.heads.config import RunConfig
from affcli.heads.data.loading import prepare_data
from affcli.common.notices import warn
from affcli.heads.infer.evaluation import hard_predictions, score
from affcli.heads.infer.outputs import split_labels
from affcli.heads.infer.runs import RunView, open_run, run_video_outputs


def _predict_share(run_dir: str, cache: str, smooth: int | None, skip_bad: bool, videos: list[str],
                   device: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """One Dask task of `predict`: the run's outputs (any kind, heads.infer.runs) of a share of the videos (none when
    all of them are bad under `skip_bad`, each already warned about)."""
    from affcli.cache.errors import AllVideosBad

    try:
        return run_video_outputs(run_dir, cache, videos, device, smooth, skip_bad)
    except AllVideosBad:
        if skip_bad:
            return {}
        raise


def _videos_to_predict(cfg: RunConfig, split: str | None, videos: list[str] | None) -> dict[str, str]:
    """{label id: cached video}: the given videos, a labelled split's, or every video cached in all the run's sets."""
    from affcli.cache.loader import common_videos
    from affcli.cache.store import FeatureStore

    if videos is not None:
        return {v: v for v in videos}
    if split is not None:
        from affcli.heads.data.loading import split_label_videos

        return split_label_videos(cfg, split)
    store = FeatureStore(cfg.cache, mode="r")
    return {v: v for v in common_videos(store, list(cfg.features))}


def predict_run(run_dir: str | Path, cache: str | Path | None, out_dir: str | Path, split: str | None = None,
                videos: list[str] | None = None, style: str = "single-file", device: str | None = None,
                au_threshold: float | None = None, labels: str | Path | None = None, smooth: int | None = None,
                skip_bad: bool = False, cluster: ClusterOptions | None = None,
                progress: Progress | None = None) -> list[Path]:
    """Predict every frame of the chosen videos (all cached ones by default) and write ABAW-format files.

    `smooth` (frames; default the run's) averages predictions over +-smooth frames within each video; `cache` and
    `labels` (needed with `split`) default to the run's. Per-video files are named by `safe_name` (ids are data);
    `skip_bad` leaves out videos whose cached arrays fail their checks, with a warning line each. The run's stored
    post-processing applies (interpolation, tuned AU thresholds and EXPR biases); `au_threshold` replaces the tuned
    thresholds (default: the run's, else 0.5). `cluster` (--dask-local / --scheduler / --gpus) spreads the videos
    over Dask workers (the same files as one process; `progress` gets a `video` event as each is done).
    """
    view = open_run(run_dir, cache, labels, device, skip_bad or None)
    cfg = view.cfg
    cfg.check_paths(labels=split is not None and videos is None)
    ids = _videos_to_predict(cfg, split, videos)
    if not ids:
        raise ValueError(f"{cfg.cache}: no videos to predict (split={split!r})")
    return write_run_predictions(view, ids, out_dir, style, au_threshold, smooth, cluster, progress)


def write_run_predictions(view: RunView, ids: dict[str, str], out_dir: str | Path, style: str = "single-file",
                          au_threshold: float | None = None, smooth: int | None = None,
                          cluster: ClusterOptions | None = None, progress: Progress | None = None) -> list[Path]:
    """Predict every frame of the cached videos of `ids` ({label id: cache video}) with a run of any kind and write
    its ABAW files (hard predictions with the run's decision rule) plus predictions_<task>.parquet into `out_dir`."""
    from affcli.cache.errors import AllVideosBad
    from affcli.heads.data.abaw_io import write_predictions

    cfg, run_dir = view.cfg, view.path
    if style == "per-video":
        for label_id in ids:
            safe_name(label_id, f"{cfg.cache}: video id")
    order = list(dict.fromkeys(ids.values()))
    if cluster:
        outs = map_videos(cluster, "predict", _predict_share, (str(run_dir), str(cfg.cache), smooth, cfg.skip_bad),
                          order, device=cfg.device, progress=progress, check=view.check)
    else:
        outs = view.video_outputs(order, cfg.device, smooth, cfg.skip_bad)
    order = [v for v in order if v in outs]
    if not order:
        raise AllVideosBad(f"{cfg.cache}: every requested video is bad in {', '.join(cfg.features)}")
    ids = {k: v for k, v in ids.items() if v in outs}
    lengths = np.array([len(next(iter(outs[v].values()))) for v in order], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    probs = {k: np.concatenate([outs[v][k] for v in order]) for k in outs[order[0]]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = np.arange(int(lengths.sum()), dtype=np.int64)
    prediction_frame(order, starts, rows, probs).write_parquet(out_dir / f"predictions_{cfg.task}.parquet")
    post = dict(view.post)
    if au_threshold is not None:
        post.pop("thresholds", None)
    hard = hard_predictions(cfg.task, probs, 0.5 if au_threshold is None else au_threshold, **post)
    index = {v: i for i, v in enumerate(order)}
    per_video = {label_id: {k: a[int(starts[index[v]]):int(starts[index[v]] + lengths[index[v]])]
                            for k, a in hard.items()} for label_id, v in ids.items()}
    return write_predictions(out_dir, cfg.task, per_video, style=style)


def evaluate_run(run_dir: str | Path, cache: str | Path | None = None, labels: str | Path | None = None,
                 split: str | None = None, device: str | None = None, smooth: int | None = None,
                 skip_bad: bool = False) -> dict:
    """Re-score a run's checkpoint on its val split (or `split`), optionally with prediction smoothing; writes
    eval_<split>.json (eval_<split>_smooth<k>.json) beside it. Only that split's labels are read, so `labels` may be
    a flat folder of its per-video files."""
    view = open_run(run_dir, cache, labels, device, skip_bad or None, smooth)
    cfg = view.cfg
    cfg.check_paths()
    split = split or cfg.splits[1]
    cfg.splits = [split, split]
    if view.kind == "folds":
        warn(f"run {run_dir}: a fold run is evaluated as the mean of its fold models, each trained on videos of the "
             f"other folds (the {split} split's among them); its cross-validated figure is metrics.json's")
    metrics = score_run(view, prepare_data(cfg), split)
    name = f"eval_{split}" + (f"_smooth{smooth}" if smooth else "")
    write_json(Path(run_dir) / f"{name}.json", metrics)
    return metrics


def score_run(view: RunView, data: Any, split: str) -> dict:
    """The official metrics of a run of any kind on a labelled split of `data` (with the run's decision rule)."""
    rows, probs = view.split_outputs(data, split)
    return score(view.cfg.task, probs, split_labels(data, rows), view.cfg.edition, **view.post)
