"""Read feature sets back for training: a lazy dask array, or one contiguous torch tensor per set."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from affcli.cache import bulk
from affcli.cache.checked import describe_error, read_checked
from affcli.cache.errors import AllVideosBad, BadVideo, CacheError
from affcli.cache.store import FeatureStore
from affcli.cache.table import FeatureTable
from affcli.common.notices import warn

if TYPE_CHECKING:
    import dask.array as da


def common_videos(store: FeatureStore, specs: list[str], videos: list[str] | None = None,
                  listed: list[set[str]] | None = None) -> list[str]:
    """Videos complete in every feature set (or check that the requested ones are); `listed` gives each set's
    complete videos when the caller has listed them already."""
    have = [set(store.videos(s)) for s in specs] if listed is None else listed
    if videos is None:
        return sorted(set.intersection(*have)) if have else []
    for s, h in zip(specs, have):
        missing = [v for v in videos if v not in h]
        if missing:
            raise CacheError(f"{store.path}: feature set {s!r} lacks {len(missing)} requested video(s): "
                             f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return list(videos)


def as_dask(path: str | Path, spec: str, videos: list[str] | None = None,
            skip_bad: bool = False) -> tuple[da.Array, np.ndarray, list[str]]:
    """A feature set as one lazy [T, D] dask array over its videos (one checked read per video, on compute), with
    row offsets and the video order. Videos whose metadata disagrees with the fingerprint are refused here (or left
    out with a warning line under `skip_bad`); a checksum mismatch surfaces as BadVideo when its chunk is computed."""
    import dask.array as da
    from dask import delayed

    store = FeatureStore(path, mode="r")
    vids = common_videos(store, [spec], videos)
    fp = store.fingerprint(spec)
    dim, dtype = int(fp["dim"]), np.dtype(fp.get("dtype") or "float16")
    parts, kept = [], []
    for v in vids:
        try:
            n = _checked_meta(store, spec, v, dim, dtype)
        except BadVideo as e:
            if not skip_bad:
                raise
            warn(f"{e}; left out (--skip-bad)")
            continue
        parts.append(da.from_delayed(delayed(_checked_feats)(store.path, spec, v, fp), (n, dim), dtype=dtype))
        kept.append(v)
    lengths = np.array([p.shape[0] for p in parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    arr = da.concatenate(parts, axis=0) if parts else da.zeros((0, dim), dtype=dtype)
    return arr, offsets, kept


def _checked_meta(store: FeatureStore, spec: str, video: str, dim: int, dtype: np.dtype) -> int:
    """A video's frame count, after checking its feats array metadata against n_frames and the fingerprint."""
    try:
        arr, n = store.video_array(spec, video), store.video_attrs(spec, video).get("n_frames")
    except Exception as e:  # a deleted zarr.json reads as KeyError / FileNotFoundError
        raise BadVideo(store.path, spec, video, f"feats unreadable ({describe_error(e)})") from None
    if arr.shape != (n, dim) or arr.dtype != dtype:
        raise BadVideo(store.path, spec, video, f"feats {arr.shape} {arr.dtype} disagree with n_frames {n} and the "
                                                f"fingerprint (dim {dim}, dtype {dtype})")
    return int(n)


def _checked_feats(path: str, spec: str, video: str, fp: dict) -> np.ndarray:
    return read_checked(FeatureStore(path, mode="r"), spec, video, fp).feats


def load_table(path: str | Path, specs: list[str], videos: list[str] | None = None,
               dtype: torch.dtype = torch.float16, threads: int = 4, skip_bad: bool = False) -> FeatureTable:
    """Load feature sets into one contiguous tensor each (rows aligned across sets) with per-video offsets.

    Every set must hold every video with the same frame count: they were extracted from the same frames. Each read
    is checked (checksum, shapes and dtype against the fingerprint): a bad video is a BadVideo naming set and video,
    or, with `skip_bad`, is left out of every set with one warning line.
    """
    store = FeatureStore(path, mode="r")
    if not specs:
        raise CacheError(f"{store.path}: no feature sets asked for; present: {', '.join(store.feature_sets())}")
    for s in specs:
        if s not in store.feature_sets():
            raise CacheError(f"{store.path}: no feature set {s!r}; present: {', '.join(store.feature_sets()) or '(none)'}")
    objects = bulk.Objects(store)
    try:
        return _load(store, objects, specs, videos, dtype, threads, skip_bad, use_manifest=True)
    except bulk.Stale:  # a video's frame count changed since the manifest: size the table from the groups
        pass
    try:
        return _load(store, objects, specs, videos, dtype, threads, skip_bad, use_manifest=False)
    except bulk.Stale as e:
        raise CacheError(f"{store.path}: video {e} changed while it was being loaded; load again") from None


def _load(store: FeatureStore, objects: bulk.Objects, specs: list[str], videos: list[str] | None,
          dtype: torch.dtype, threads: int, skip_bad: bool, use_manifest: bool) -> FeatureTable:
    """One pass of `load_table` with the videos' attributes from the manifest (where it has them) or the groups."""
    listed = bulk.list_videos(objects, store, specs, use_manifest)
    vids = common_videos(store, specs, videos, [set(listed[s]) for s in specs])
    if not vids:
        raise CacheError(f"{store.path}: no video is complete in all of {', '.join(specs)}")
    attrs = {v: listed[specs[0]][v].attrs for v in vids}
    lengths = np.array([_n_frames(store, specs[0], v, attrs[v]) for v in vids], dtype=np.int64)
    for s in specs[1:]:
        for v, n in zip(vids, lengths):
            m = _n_frames(store, s, v, listed[s][v].attrs)
            if m != n and use_manifest:
                raise bulk.Stale(f"{s}/{v}")
            if m != n:
                raise CacheError(f"{store.path}: video {v!r} has {m} frames in {s!r} but {n} in {specs[0]!r}")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    total = int(lengths.sum())
    feats, valid, bad = {}, {}, {}
    ts = np.zeros(total, dtype=np.float64)

    def on_bad(i: int, e: BadVideo) -> None:
        if not skip_bad:
            raise e
        bad.setdefault(i, e)

    fprints = {s: store.fingerprint(s) for s in specs}
    for s in specs:
        fp = fprints[s]
        feats[s] = np.empty((total, int(fp["dim"])), dtype=np.float16)
        valid[s] = np.empty(total, dtype=bool)
        targets = [bulk.Target(i, listed[s][v], slice(int(starts[i]), int(starts[i] + lengths[i])))
                   for i, v in enumerate(vids) if i not in bad]
        bulk.read_set(store, objects, s, fp, targets, feats[s], valid[s], ts if s == specs[0] else None, threads,
                      on_bad)
    if bad:
        vids, starts, lengths, feats, valid, ts = _without(sorted(bad), vids, starts, lengths, feats, valid, ts)
        for i in sorted(bad):
            warn(f"{bad[i]}; left out of every feature set (--skip-bad)")
        if not vids:
            raise AllVideosBad(f"{store.path}: every requested video is bad in {', '.join(specs)}")
    tfeats = {s: torch.from_numpy(b) if dtype == torch.float16 else torch.from_numpy(b).to(dtype) for s, b in feats.items()}
    fps = {v: float(attrs[v].get("fps") or 0.0) for v in vids}
    modality = {s: m for s in specs if (m := fprints[s].get("modality")) is not None}
    return FeatureTable(vids, starts, lengths, tfeats, {s: torch.from_numpy(b) for s, b in valid.items()},
                        torch.from_numpy(ts), fps, modality)


def _n_frames(store: FeatureStore, spec: str, video: str, attrs: dict) -> int:
    """A listed video's frame count from its attributes (BadVideo when they hold none)."""
    n = attrs.get("n_frames")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise BadVideo(store.path, spec, video, f"n_frames {n!r} in its attributes is not a frame count")
    return n


def _without(drop: list[int], vids: list[str], starts: np.ndarray, lengths: np.ndarray, feats: dict[str, np.ndarray],
             valid: dict[str, np.ndarray], ts: np.ndarray):
    """The table's arrays without the videos at indices `drop` (a copy: taken only when a bad video is skipped)."""
    keep_v = np.ones(len(vids), bool)
    keep_v[drop] = False
    rows = np.repeat(keep_v, lengths)
    lengths = lengths[keep_v]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return ([v for v, k in zip(vids, keep_v) if k], starts, lengths, {s: b[rows] for s, b in feats.items()},
            {s: b[rows] for s, b in valid.items()}, ts[rows])
