"""Teacher soft targets kept beside the features: a finished run's per-frame outputs, computed once per teacher.

Layout (inside the feature cache's Zarr store)::

    <cache>/teacher/<run-hash>/zarr.json          attrs: fingerprint (teacher config, checkpoint hash, features), run
    <cache>/teacher/<run-hash>/<video-key>/       attrs: video_id, n_frames, complete (written last)
        <output key> [n_frames, dim] float32      class/multi-label probabilities or values

`run-hash` is the hash of the fingerprint, so a changed teacher (new weights, config or features) gets a new group
and is never mistaken for the old one; a video counts only once its `complete` mark is written.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np

from affcli.cache.crc import ATTR as CRC_ATTR
from affcli.cache.crc import array_crc32c, crc32c
from affcli.cache.errors import CacheError
from affcli.cache.store import TEACHER_GROUP, FeatureStore, safe_key
from affcli.common.runs import config_hash


def teacher_key(fingerprint: dict[str, Any]) -> str:
    """The run hash naming a teacher's group: a hash of its whole fingerprint."""
    return config_hash(fingerprint, 16)


class TeacherTargets:
    """One teacher's cached targets in a feature cache (open with `open_targets`)."""

    def __init__(self, store: FeatureStore, key: str):
        self.store, self.key = store, key
        self.group = store.root[TEACHER_GROUP][key]

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the teacher (its config and checkpoint hashes, feature fingerprints, outputs)."""
        return dict(self.group.attrs["fingerprint"])

    def _videos(self) -> tuple[dict, dict[str, str]]:
        return self.store._subgroups(self.group, f"{TEACHER_GROUP}/{self.key}")

    def videos(self) -> list[str]:
        """Videos whose targets are completely written (groups that do not read are left to `damaged`)."""
        return sorted(str(g.attrs.get("video_id")) for g in self._videos()[0].values() if g.attrs.get("complete")
                      and isinstance(g.attrs.get("video_id"), str))

    def damaged(self) -> dict[str, str]:
        """{video group: problem} of targets whose metadata does not read (`cache verify` reports them)."""
        return self._videos()[1]

    def write(self, video: str, targets: dict[str, np.ndarray]) -> None:
        """Write one video's targets ({output key: [n_frames, dim]}); the `complete` mark goes last."""
        lengths = {k: int(np.asarray(v).shape[0]) for k, v in targets.items()}
        if len(set(lengths.values())) != 1:
            raise CacheError(f"{self.store.path}: teacher {self.key}: {video}: outputs disagree on frame count "
                             f"{lengths}")
        vg = self.group.create_group(safe_key(video), overwrite=True,
                                     attributes={"video_id": video, "complete": False})
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in targets.items()}
        for k, v in arrays.items():
            vg.create_array(safe_key(k), data=v)
        vg.attrs.update({"n_frames": next(iter(lengths.values())), "outputs": sorted(targets), "written": _now(),
                         CRC_ATTR: array_crc32c(arrays)})
        vg.attrs["complete"] = True

    def read(self, video: str) -> dict[str, np.ndarray]:
        """One video's targets {output key: [n_frames, dim] float32}, each checked against its CRC-32C (targets
        written before the checksum are read as they are); CacheError naming the video when they do not check."""
        key = safe_key(video)
        if key not in self.group or not self.group[key].attrs.get("complete"):
            raise CacheError(f"{self.store.path}: teacher {self.key} has no complete targets for video {video!r}")
        where = f"{self.store.path}: teacher {self.key}, video {video!r}"
        try:
            vg = self.group[key]
            attrs = dict(vg.attrs)
            out = {k: vg[safe_key(k)][:] for k in attrs["outputs"]}
        except Exception as e:  # a missing or undecodable array or metadata
            raise CacheError(f"{where}: unreadable ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
        crc, n = attrs.get(CRC_ATTR), attrs.get("n_frames")
        for k, a in out.items():
            if a.dtype != np.float32 or a.ndim != 2 or a.shape[0] != n:
                raise CacheError(f"{where}: {k} is {a.shape} {a.dtype}, expected [{n}, dim] float32")
            if isinstance(crc, dict) and crc.get(k) != crc32c(a):
                raise CacheError(f"{where}: checksum mismatch in {k} (changed after writing); remove the teacher "
                                 f"(cache.teacher.remove_teacher) and run `affcli cache teacher` again")
        return out

    def attrs(self, video: str) -> dict[str, Any]:
        """Attributes of one video's targets (n_frames, outputs, written, complete)."""
        return dict(self.group[safe_key(video)].attrs)


def open_targets(path: str | Path, fingerprint: dict[str, Any], run: str = "",
                 storage_options: dict | None = None) -> TeacherTargets:
    """The teacher group of this fingerprint, created if new; an existing group must carry the same fingerprint."""
    store = FeatureStore(path, mode="a", storage_options=storage_options)
    if TEACHER_GROUP in store.root.attrs.get("feature_sets", {}):
        raise CacheError(f"{store.path}: a feature set occupies the {TEACHER_GROUP!r} group; teacher targets need it")
    key = teacher_key(fingerprint)
    tg = store.root.require_group(TEACHER_GROUP)
    if key in tg:
        have = dict(tg[key].attrs.get("fingerprint", {}))
        if have != _jsonable(fingerprint):
            raise CacheError(f"{store.path}: teacher/{key} holds another teacher's targets (fingerprint differs); "
                             f"remove it with cache.teacher.remove_teacher")
    else:
        tg.create_group(key, attributes={"fingerprint": fingerprint, "run": str(run), "created": _now()})
    return TeacherTargets(store, key)


def read_targets(path: str | Path, key: str, mode: str = "r") -> TeacherTargets:
    """An existing teacher group, read-only (or with mode "a", to write more videos: a Dask task of a teacher)."""
    store = FeatureStore(path, mode=mode)
    if TEACHER_GROUP not in store.root or key not in store.root[TEACHER_GROUP]:
        raise CacheError(f"{store.path}: no teacher targets {key!r}; present: {', '.join(teachers(path)) or '(none)'}")
    return TeacherTargets(store, key)


def teacher_groups(store: FeatureStore) -> tuple[dict[str, Any], dict[str, str]]:
    """(readable teacher groups by run hash, {key: problem} of those whose metadata does not read)."""
    return store.area_groups(TEACHER_GROUP)


def teachers(path: str | Path) -> dict[str, dict[str, Any]]:
    """{run hash: {run, created, videos}} of every teacher cached in a feature cache."""
    store = FeatureStore(path, mode="r")
    out = {}
    for key, g in teacher_groups(store)[0].items():
        n = len(TeacherTargets(store, key).videos())
        out[key] = {"run": g.attrs.get("run", ""), "created": g.attrs.get("created"), "videos": n}
    return out


def remove_teacher(path: str | Path, key: str) -> None:
    """Delete one teacher's cached targets."""
    store = FeatureStore(path, mode="a")
    if TEACHER_GROUP not in store.root or key not in store.root[TEACHER_GROUP]:
        raise CacheError(f"{store.path}: no teacher targets {key!r}")
    del store.root[TEACHER_GROUP][key]


def _jsonable(obj: Any) -> Any:
    """The value as a JSON round trip stores it (tuples become lists), for comparing fingerprints."""
    import json

    return json.loads(json.dumps(obj))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
