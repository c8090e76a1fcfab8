"""Load a run's data from the Zarr cache and the Aff-Wild2 label files (heads.labels) onto the device."""
from __future__ import annotations

import numpy as np
import polars as pl
import torch

from affcli.heads.config import RunConfig
from affcli.heads.data import Data


def _store(cfg: RunConfig):
    from affcli.cache.store import FeatureStore

    if not cfg.cache:
        raise ValueError("no feature cache given: pass --cache (or `cache = ...` in the run config)")
    if not cfg.labels:
        raise ValueError("no label root given: pass --labels (or `labels = ...` in the run config)")
    return FeatureStore(cfg.cache, mode="r")


def resolve_features(cfg: RunConfig, store) -> list[str]:
    """cfg.features, or every feature set of the cache when empty; unknown ones, or ones without a recorded
    modality (legacy caches), refused with a one-line error."""
    present = store.feature_sets()
    feats = list(cfg.features) or list(present)
    for f in feats:
        if f not in present:
            raise ValueError(f"{cfg.cache}: no feature set {f!r}; present: {', '.join(present) or '(none)'}")
    if not feats:
        raise ValueError(f"{cfg.cache}: the cache holds no feature sets")
    store.modalities(feats)
    return feats


def split_label_videos(cfg: RunConfig, split: str) -> dict[str, str]:
    """{label id: cache video id} of a split's labelled videos that are complete in the cache
    (`video10_left` and `video10_right` both map to `video10` unless the cache holds per-id features)."""
    from affcli.heads.labels import load_labels

    store = _store(cfg)
    complete = set.intersection(*[set(store.videos(f)) for f in resolve_features(cfg, store)])
    df = _with_cached_ids(load_labels(cfg.labels, cfg.task, split), complete)
    pairs = df.select("video", "feature_video").unique(maintain_order=True).iter_rows()
    return {v: f for v, f in pairs if f in complete}


def load_run_data(cfg: RunConfig, device: torch.device) -> Data:
    """Labels of both splits, features of their videos (those complete in the cache), dense label arrays and every
    cached prompt set (those encoded by a backbone among the run's feature sets first), so one Data serves any loss."""
    from affcli.cache import load_table
    from affcli.heads.labels import align_to_frames, check_disjoint_splits, labels_to_arrays, load_labels

    store = _store(cfg)
    feats = resolve_features(cfg, store)
    complete = set.intersection(*[set(store.videos(f)) for f in feats])
    frames = {s: _with_cached_ids(load_labels(cfg.labels, cfg.task, s), complete) for s in cfg.splits}
    check_disjoint_splits(cfg.labels, frames)
    split_vids, missing = {}, {}
    for s, df in frames.items():
        vids = sorted(set(df["feature_video"].to_list()))
        split_vids[s] = [v for v in vids if v in complete]
        missing[s] = [v for v in vids if v not in complete]
        if not split_vids[s]:
            raise ValueError(f"{cfg.cache}: none of the {len(vids)} labelled {s} videos is complete in "
                             f"{', '.join(feats)} (e.g. {', '.join(vids[:3])})")
    order = list(dict.fromkeys(v for s in cfg.splits for v in split_vids[s]))
    table = load_table(cfg.cache, feats, videos=order)
    n_frames = {v: int(n) for v, n in zip(table.videos, table.lengths)}
    index_of = {v: int(s) for v, s in zip(table.videos, table.starts)}
    labels: dict[str, np.ndarray] = {}
    for s, df in frames.items():
        df = df.filter(pl.col("feature_video").is_in(split_vids[s]))
        arr = labels_to_arrays(align_to_frames(df, n_frames), cfg.task, index_of, n_rows=table.n_frames)
        for k, v in arr.items():
            if k not in labels:
                labels[k] = v.copy()
            elif k.startswith("mask_"):
                labels[k] |= v
            else:
                labels[k] = np.where(_rows_mask(arr, k, v), v, labels[k])
    text = {}
    rank = {f: i for i, f in enumerate(feats)}
    for name, spec in sorted(store.text_sets(), key=lambda ns: rank.get(ns[1], len(rank))):
        text.setdefault(name, store.read_text_embeddings(name, spec)[1])
    data = Data.from_table(table, labels, split_vids, cfg.task, feats, text, device)
    data.info = {"missing_videos": {s: len(v) for s, v in missing.items()},
                 "videos": {s: len(v) for s, v in split_vids.items()}}
    return data


def _with_cached_ids(df: "pl.DataFrame", complete: set[str]) -> "pl.DataFrame":
    """feature_video = the label id itself where the cache holds it (per-id face crops of `_left`/`_right`)."""
    return df.with_columns(feature_video=pl.when(pl.col("video").is_in(list(complete)))
                           .then(pl.col("video")).otherwise(pl.col("feature_video")))


def _rows_mask(arr: dict, key: str, v: np.ndarray) -> np.ndarray:
    m = np.asarray(arr.get(f"mask_{key}", np.ones(v.shape[0], bool)))
    while m.ndim < v.ndim:
        m = m[..., None]
    return m
