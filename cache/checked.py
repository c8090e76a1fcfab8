"""Checked reads: a video's arrays as stored, refused (BadVideo) unless they match their checksum and fingerprint.

The checksum is the `sha256` written with the video, computed over the bytes the read already holds, so checking
costs one hash pass over memory and no second read.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from affcli.cache.errors import BadVideo
from affcli.cache.store import FeatureStore, VideoRecord, array_sha256


def read_checked(store: FeatureStore, spec: str, video: str, fingerprint: dict[str, Any] | None = None,
                 checksum: bool = True) -> VideoRecord:
    """One complete video, with its face record; BadVideo when an array or its metadata is missing or unreadable,
    when shapes or dtype disagree with `n_frames` and the fingerprint (dim, dtype), or when the checksum differs."""
    fp = store.fingerprint(spec) if fingerprint is None else fingerprint
    try:
        rec = store.read_video(spec, video, faces=True)
    except Exception as e:  # zarr raises KeyError, FileNotFoundError, ValueError ... for a damaged group
        raise BadVideo(store.path, spec, video, f"unreadable ({describe_error(e)})") from None
    problem = shape_problem(rec, fp)
    if problem is None and checksum and rec.attrs.get("sha256") != array_sha256(rec.feats, rec.valid, rec.timestamps,
                                                                                 rec.faces):
        problem = "checksum mismatch (data changed after writing); re-extract it or pass --skip-bad"
    if problem is not None:
        raise BadVideo(store.path, spec, video, problem)
    return rec


def shape_problem(rec: VideoRecord, fp: dict[str, Any]) -> str | None:
    """What is wrong with a record's shapes and dtype against its `n_frames` and the fingerprint's dim and dtype."""
    n, dim, dtype = rec.attrs.get("n_frames"), fp.get("dim"), fp.get("dtype") or "float16"
    if rec.feats.ndim != 2 or rec.feats.shape[0] != n:
        return f"feats shape {rec.feats.shape} does not hold n_frames {n}"
    if rec.feats.shape[1] != dim:
        return f"fingerprint says dim {dim!r} but feats hold {rec.feats.shape[1]}"
    if str(rec.feats.dtype) != str(dtype):
        return f"fingerprint says dtype {dtype!r} but feats hold {rec.feats.dtype}"
    if rec.valid.shape != (n,) or rec.timestamps.shape != (n,):
        return f"valid {rec.valid.shape} / timestamps {rec.timestamps.shape} do not hold n_frames {n}"
    if rec.valid.dtype != np.bool_ or rec.timestamps.dtype != np.float64:
        return f"valid/timestamps dtypes {rec.valid.dtype}/{rec.timestamps.dtype}, expected bool/float64"
    return None


def describe_error(e: BaseException) -> str:
    """An exception as a short one-line phrase (a missing key as 'missing')."""
    if isinstance(e, KeyError) and e.args:
        return f"array or group {e.args[0]!r} is missing"
    msg = " ".join(str(e).split())[:200]
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
