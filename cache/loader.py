"""Read feature sets back for training: a lazy dask array, or one contiguous torch tensor per set."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask.array as da
import numpy as np
import torch

from affcli.cache.errors import CacheError
from affcli.cache.store import FeatureStore
from affcli.cache.table import FeatureTable


def common_videos(store: FeatureStore, specs: list[str], videos: list[str] | None = None) -> list[str]:
    """Videos complete in every feature set (or check that the requested ones are)."""
    have = [set(store.videos(s)) for s in specs]
    if videos is None:
        return sorted(set.intersection(*have)) if have else []
    for s, h in zip(specs, have):
        missing = [v for v in videos if v not in h]
        if missing:
            raise CacheError(f"{store.path}: feature set {s!r} lacks {len(missing)} requested video(s): "
                             f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return list(videos)


def as_dask(path: str | Path, spec: str, videos: list[str] | None = None) -> tuple[da.Array, np.ndarray, list[str]]:
    """A feature set as one lazy [T, D] dask array over its videos, with row offsets and the video order."""
    store = FeatureStore(path, mode="r")
    vids = common_videos(store, [spec], videos)
    parts = [da.from_zarr(store.video_array(spec, v)) for v in vids]
    lengths = np.array([p.shape[0] for p in parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    dim = int(store.fingerprint(spec)["dim"])
    arr = da.concatenate(parts, axis=0) if parts else da.zeros((0, dim), dtype=np.float16)
    return arr, offsets, vids


def load_table(path: str | Path, specs: list[str], videos: list[str] | None = None,
               dtype: torch.dtype = torch.float16, threads: int = 4) -> FeatureTable:
    """Load feature sets into one contiguous tensor each (rows aligned across sets) with per-video offsets.

    Every set must hold every video with the same frame count: they were extracted from the same frames.
    """
    store = FeatureStore(path, mode="r")
    if not specs:
        raise CacheError(f"{store.path}: no feature sets asked for; present: {', '.join(store.feature_sets())}")
    for s in specs:
        if s not in store.feature_sets():
            raise CacheError(f"{store.path}: no feature set {s!r}; present: {', '.join(store.feature_sets()) or '(none)'}")
    vids = common_videos(store, specs, videos)
    if not vids:
        raise CacheError(f"{store.path}: no video is complete in all of {', '.join(specs)}")
    attrs = {v: store.video_attrs(specs[0], v) for v in vids}
    lengths = np.array([attrs[v]["n_frames"] for v in vids], dtype=np.int64)
    for s in specs[1:]:
        for v, n in zip(vids, lengths):
            m = store.video_attrs(s, v)["n_frames"]
            if m != n:
                raise CacheError(f"{store.path}: video {v!r} has {m} frames in {s!r} but {n} in {specs[0]!r}")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    total = int(lengths.sum())
    feats, valid = {}, {}
    ts = np.zeros(total, dtype=np.float64)
    for s in specs:
        dim = int(store.fingerprint(s)["dim"])
        buf = np.empty((total, dim), dtype=np.float16)
        vbuf = np.empty(total, dtype=bool)

        def fill(i: int, s: str = s, buf: np.ndarray = buf, vbuf: np.ndarray = vbuf) -> None:
            rec = store.read_video(s, vids[i])
            sl = slice(int(starts[i]), int(starts[i] + lengths[i]))
            buf[sl], vbuf[sl] = rec.feats, rec.valid
            if s == specs[0]:
                ts[sl] = rec.timestamps

        with ThreadPoolExecutor(max(1, threads)) as ex:
            list(ex.map(fill, range(len(vids))))
        t = torch.from_numpy(buf)
        feats[s] = t if dtype == torch.float16 else t.to(dtype)
        valid[s] = torch.from_numpy(vbuf)
    fps = {v: float(attrs[v].get("fps") or 0.0) for v in vids}
    modality = {s: m for s in specs if (m := store.fingerprint(s).get("modality")) is not None}
    return FeatureTable(vids, starts, lengths, feats, valid, torch.from_numpy(ts), fps, modality)
