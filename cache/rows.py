"""Per-row extras of a video group: the source path of each row (image caches) and K augmented views of its features.

Stored beside `feats` through `FeatureStore.write_video(extras=row_extras(...))`, before the `complete` mark:
    paths  [bytes] uint8   the rows' relative paths, UTF-8, newline-separated (a stable Zarr v3 dtype)
    views  [K, n, dim] float16   features of K augmented views of each row (same backbone, same order)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from affcli.cache.errors import CacheError
from affcli.cache.store import FeatureStore

PATHS, VIEWS = "paths", "views"


def row_extras(paths: list[str] | None = None, views: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The `extras` of write_video for per-row paths and/or a [K, n, dim] view array."""
    out: dict[str, np.ndarray] = {}
    if paths is not None:
        bad = [p for p in paths if "\n" in p]
        if bad:
            raise CacheError(f"row path {bad[0]!r} contains a newline")
        out[PATHS] = np.frombuffer("\n".join(paths).encode("utf-8"), np.uint8).copy()
    if views is not None:
        if views.ndim != 3:
            raise CacheError(f"views must be [K, n, dim], not {views.shape}")
        f16 = np.ascontiguousarray(views, np.float16)
        if not np.isfinite(f16).all():
            raise CacheError("view features contain NaN or inf")
        out[VIEWS] = f16
    return out


def read_paths(store: FeatureStore, spec: str, video_id: str) -> list[str] | None:
    """The relative path of each row of a video (None when it was not extracted from images)."""
    raw = store.read_extra(spec, video_id, PATHS)
    if raw is None:
        return None
    text = bytes(np.asarray(raw, np.uint8)).decode("utf-8")
    return text.split("\n") if text else []


def read_views(store: FeatureStore, spec: str, video_id: str) -> np.ndarray | None:
    """[K, n, dim] augmented-view features of a video (None when it has no stored views)."""
    return store.read_extra(spec, video_id, VIEWS)


def load_views(cache: str | Path | FeatureStore, spec: str, videos: list[str]) -> torch.Tensor | None:
    """Views of `videos` concatenated along rows like load_table ([K, T, dim] float32), or None if any video has
    none; videos with different K are refused."""
    store = cache if isinstance(cache, FeatureStore) else FeatureStore(cache, mode="r")
    parts = [read_views(store, spec, v) for v in videos]
    if not parts or any(p is None for p in parts):
        return None
    ks = {p.shape[0] for p in parts}
    if len(ks) > 1:
        raise CacheError(f"{store.path}: feature set {spec!r} holds different view counts {sorted(ks)} across videos")
    return torch.from_numpy(np.concatenate(parts, 1).astype(np.float32))
