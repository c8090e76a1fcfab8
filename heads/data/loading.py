"""Load a run's data from the Zarr cache and the Aff-Wild2 label files (heads.labels) onto the device."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from affcli.cache.table import FeatureTable
from affcli.common.device import resolve_device
from affcli.common.runs import config_hash
from affcli.heads.config import RunConfig
from affcli.heads.data.dataset import Data

DATA_KEYS = ("task", "features", "cache", "labels", "splits", "device", "audio_valid", "audio_valid_threshold")


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


def cached_modalities(cfg: RunConfig) -> dict[str, str]:
    """{feature set: modality} of the run's features (every set of the cache when none are named), read from the
    cache's fingerprints, so the run's parts are checked against them before any array is read."""
    store = _store(cfg)
    return store.modalities(resolve_features(cfg, store))


def split_label_videos(cfg: RunConfig, split: str) -> dict[str, str]:
    """{label id: cache video id} of a split's labelled videos that are complete in the cache
    (`video10_left` and `video10_right` both map to `video10` unless the cache holds per-id features)."""
    store = _store(cfg)
    feats = resolve_features(cfg, store)
    complete = set.intersection(*[set(store.videos(f)) for f in feats])
    df = _split_labels(cfg, store, feats, complete, split)
    pairs = df.select("video", "feature_video").unique(maintain_order=True).iter_rows()
    return {v: f for v, f in pairs if f in complete}


def load_run_data(cfg: RunConfig, device: torch.device) -> Data:
    """Labels of both splits, features of their videos (those complete in the cache), dense label arrays and every
    cached prompt set (those encoded by a backbone among the run's feature sets first), so one Data serves any loss."""
    from affcli.cache import load_table
    from affcli.heads.data.labels import align_to_frames, check_disjoint_splits, labels_to_arrays

    store = _store(cfg)
    feats = resolve_features(cfg, store)
    check_image_window(cfg, store, feats)
    complete = set.intersection(*[set(store.videos(f)) for f in table_specs(cfg, store, feats)])
    frames = {s: _split_labels(cfg, store, feats, complete, s) for s in cfg.splits}
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
    table = load_features(cfg, feats, order)
    n_frames = {v: int(n) for v, n in zip(table.videos, table.lengths)}
    split_vids = {s: [v for v in vs if v in n_frames] for s, vs in split_vids.items()}
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


def table_specs(cfg: RunConfig, store, feats: list[str]) -> list[str]:
    """The feature sets to read: the run's, plus its --audio-valid set (checked: in the cache, audio, 1-d)."""
    spec = cfg.audio_valid
    if not spec:
        return list(feats)
    present = store.feature_sets()
    if spec not in present:
        raise ValueError(f"{cfg.cache}: no feature set {spec!r} for --audio-valid; present: {', '.join(present)}")
    fp = store.fingerprint(spec)
    if fp.get("modality") != "audio" or int(fp.get("dim", 0)) != 1:
        raise ValueError(f"{cfg.cache}: --audio-valid {spec!r} must be a 1-d audio feature set (such as vad:silero), "
                         f"not {fp.get('modality')} with dim {fp.get('dim')}")
    return list(dict.fromkeys([*feats, spec]))


def load_features(cfg: RunConfig, feats: list[str], videos: list[str], skip_bad: bool | None = None):
    """The FeatureTable of `feats` over `videos` with the run's --audio-valid mask applied: an audio set's frame is
    valid only where the mask set is valid and reaches the threshold (the set itself is read but not kept unless it
    is one of `feats`)."""
    from affcli.cache import load_table
    from affcli.cache.store import FeatureStore

    store = FeatureStore(cfg.cache, mode="r")
    specs = table_specs(cfg, store, feats)
    table = load_table(cfg.cache, specs, videos=list(videos), skip_bad=cfg.skip_bad if skip_bad is None else skip_bad)
    if cfg.audio_valid:
        gate = cfg.audio_valid
        speech = table.valid[gate].bool() & (table.feats[gate][:, 0].float() >= float(cfg.audio_valid_threshold))
        for s in feats:
            if table.modality.get(s) == "audio":
                table.valid[s] = table.valid[s].bool() & speech
        if gate not in feats:
            table.feats.pop(gate)
            table.valid.pop(gate)
            table.modality.pop(gate, None)
    return table


def is_image_cache(store, feats: list[str]) -> bool:
    """True when every feature set was extracted from still images (`extract --images-dir`: one row per image)."""
    return all(store.fingerprint(f).get("preprocessing", {}).get("input") == "images" for f in feats)


def check_image_window(cfg: RunConfig, store, feats: list[str]) -> None:
    """Refuse windows longer than one row on an image cache (a folder's images are not a sequence, and a window
    inside one class folder would leak the class), and a stride that would skip images."""
    if (cfg.window > 1 or cfg.stride > 1) and is_image_cache(store, feats):
        what = (f"window {cfg.window}: a window over one folder's images would leak its class folder" if cfg.window > 1
                else f"stride {cfg.stride}: windows of one image would skip {cfg.stride - 1} of every {cfg.stride} images")
        raise ValueError(f"{cfg.cache}: {what} (image cache, extract --images-dir); pass --window 1 --stride 1")


def _split_labels(cfg: RunConfig, store, feats: list[str], complete: set[str], split: str) -> pl.DataFrame:
    """A split's label table keyed by cached (feature_video, frame): per-image labels (a 'class-folders' task) on an
    image cache are mapped onto the cached folder rows; other labels keep their ids."""
    from affcli.heads.data.labels import load_labels
    from affcli.heads.tasks import get_task

    df = load_labels(cfg.labels, cfg.task, split)
    if get_task(cfg.task).labels.layout == "class-folders" and is_image_cache(store, feats):
        return _on_image_rows(df, _image_rows(store, feats[0], complete), cfg, split)
    return _with_cached_ids(df, complete)


def _image_rows(store, spec: str, videos: set[str]) -> pl.DataFrame:
    """(feature_video, frame, _abs, _rel) of every cached row of `videos`: _abs = the folder video's source folder
    (resolved) / the row's file name, _rel = the row's path relative to the extracted --images-dir."""
    from affcli.cache.rows import read_paths

    parts = []
    for v in sorted(videos):
        paths = read_paths(store, spec, v)
        if not paths:
            continue
        folder = Path(store.video_attrs(spec, v).get("source", "")).resolve().as_posix()
        parts.append(pl.DataFrame({"feature_video": [v] * len(paths), "frame": np.arange(len(paths), dtype=np.int64),
                                   "_abs": [f"{folder}/{p.rsplit('/', 1)[-1]}" for p in paths], "_rel": paths}))
    schema = {"feature_video": pl.String, "frame": pl.Int64, "_abs": pl.String, "_rel": pl.String}
    return pl.concat(parts) if parts else pl.DataFrame(schema=schema)


def _on_image_rows(df: pl.DataFrame, rows: pl.DataFrame, cfg: RunConfig, split: str) -> pl.DataFrame:
    """Per-image labels (`source` = the image file) -> video = feature_video = its cached folder video, frame = its
    row; matched by resolved path, else by the path below the label root (a cache extracted elsewhere from the same
    tree). Images without a complete cached row are left out with one warning line."""
    from affcli.common.notices import warn

    root = Path(cfg.labels).resolve()
    src = pl.col("source").cast(pl.String)
    keyed = df.drop("feature_video", "frame").with_columns(_dir=src.str.extract(r"^(.*)/[^/]+$", 1),
                                                           _name=src.str.extract(r"([^/]+)$", 1))
    resolved = {d: Path(d).resolve() for d in keyed["_dir"].unique().to_list()}
    below = {d: (p.relative_to(root).as_posix() + "/" if p.is_relative_to(root) and p != root else None)
             for d, p in resolved.items()}
    keyed = keyed.with_columns(
        _abs=pl.col("_dir").replace_strict({d: p.as_posix() + "/" for d, p in resolved.items()}) + pl.col("_name"),
        _rel=pl.col("_dir").replace_strict(below, return_dtype=pl.String) + pl.col("_name"))
    by_abs = rows.select("_abs", _fa="feature_video", _ra="frame")
    by_rel = rows.select("_rel", _fr="feature_video", _rr="frame").unique("_rel", keep="none")
    out = (keyed.join(by_abs, on="_abs", how="left").join(by_rel, on="_rel", how="left")
           .with_columns(feature_video=pl.coalesce("_fa", "_fr"), frame=pl.coalesce("_ra", "_rr")))
    lost = out.filter(pl.col("feature_video").is_null())
    if lost.height == out.height:
        raise ValueError(f"{cfg.cache}: none of the {out.height} labelled {split} images is a cached row (e.g. "
                         f"{lost['source'][0]}); extract --images-dir over the label folders")
    if lost.height:
        warn(f"{cfg.labels}: {lost.height} of {out.height} labelled {split} images have no complete cached row "
             f"(e.g. {lost['source'][0]}); left out")
    return (out.filter(pl.col("feature_video").is_not_null()).with_columns(video=pl.col("feature_video"))
            .select(df.columns).sort(["video", "frame"]))


def _with_cached_ids(df: pl.DataFrame, complete: set[str]) -> pl.DataFrame:
    """feature_video = the label id itself where the cache holds it (per-id face crops of `_left`/`_right`)."""
    return df.with_columns(feature_video=pl.when(pl.col("video").is_in(list(complete)))
                           .then(pl.col("video")).otherwise(pl.col("feature_video")))


def _rows_mask(arr: dict, key: str, v: np.ndarray) -> np.ndarray:
    m = np.asarray(arr.get(f"mask_{key}", np.ones(v.shape[0], bool)))
    while m.ndim < v.ndim:
        m = m[..., None]
    return m


def data_key(cfg: dict[str, Any] | RunConfig) -> str:
    """Hash of the config fields that decide what `prepare_data` loads (runs with equal keys share Data)."""
    d = cfg.to_dict() if isinstance(cfg, RunConfig) else cfg
    return config_hash({k: d.get(k) for k in DATA_KEYS})


def prepare_data(cfg: RunConfig, table: FeatureTable | None = None, labels: dict | None = None,
                 splits: dict[str, list[str]] | None = None, text: dict | None = None) -> Data:
    """Load features and labels once onto the device (from cfg.cache/cfg.labels unless given)."""
    device = resolve_device(cfg.device)
    if table is not None:
        if labels is None or splits is None:
            raise ValueError("prepare_data: with table= also give labels= (dense arrays) and splits= ({split: [videos]})")
        return Data.from_table(table, labels, splits, cfg.task, cfg.features or None, text, device)
    return load_run_data(cfg, device)
