"""Read feature sets back for training: a lazy dask array, or one contiguous torch tensor per set."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask.array as da
import numpy as np
import torch
from dask import delayed

from affcli.cache.checked import describe_error, read_checked
from affcli.cache.errors import BadVideo, CacheError
from affcli.cache.store import FeatureStore
from affcli.cache.table import FeatureTable
from affcli.common.notices import warn


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


def as_dask(path: str | Path, spec: str, videos: list[str] | None = None,
            skip_bad: bool = False) -> tuple[da.Array, np.ndarray, list[str]]:
    """A feature set as one lazy [T, D] dask array over its videos (one checked read per video, on compute), with
    row offsets and the video order. Videos whose metadata disagrees with the fingerprint are refused here (or left
    out with a warning line under `skip_bad`); a checksum mismatch surfaces as BadVideo when its chunk is computed."""
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
    feats, valid, bad = {}, {}, {}
    ts = np.zeros(total, dtype=np.float64)
    for s in specs:
        fp = store.fingerprint(s)
        dim = int(fp["dim"])
        buf = np.empty((total, dim), dtype=np.float16)
        vbuf = np.empty(total, dtype=bool)

        def fill(i: int, s: str = s, fp: dict = fp, buf: np.ndarray = buf, vbuf: np.ndarray = vbuf) -> None:
            try:
                rec = read_checked(store, s, vids[i], fp)
            except BadVideo as e:
                if not skip_bad:
                    raise
                bad.setdefault(i, e)
                return
            sl = slice(int(starts[i]), int(starts[i] + lengths[i]))
            buf[sl], vbuf[sl] = rec.feats, rec.valid
            if s == specs[0]:
                ts[sl] = rec.timestamps

        with ThreadPoolExecutor(max(1, threads)) as ex:
            list(ex.map(fill, range(len(vids))))
        feats[s], valid[s] = buf, vbuf
    if bad:
        vids, starts, lengths, feats, valid, ts = _without(sorted(bad), vids, starts, lengths, feats, valid, ts)
        for i in sorted(bad):
            warn(f"{bad[i]}; left out of every feature set (--skip-bad)")
        if not vids:
            raise CacheError(f"{store.path}: every requested video is bad in {', '.join(specs)}")
    tfeats = {s: torch.from_numpy(b) if dtype == torch.float16 else torch.from_numpy(b).to(dtype) for s, b in feats.items()}
    fps = {v: float(attrs[v].get("fps") or 0.0) for v in vids}
    modality = {s: m for s in specs if (m := store.fingerprint(s).get("modality")) is not None}
    return FeatureTable(vids, starts, lengths, tfeats, {s: torch.from_numpy(b) for s, b in valid.items()},
                        torch.from_numpy(ts), fps, modality)


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
