"""The on-disk feature cache: one Zarr v3 store, a group per feature set, one sharded array per video.

Layout (all names sanitised; the exact spec / video id live in attributes)::

    <cache>/zarr.json                      root attrs: format version, {key: spec} of feature sets
    <cache>/<fs-key>/zarr.json             attrs: spec, fingerprint, failures {video: error}
    <cache>/<fs-key>/<video-key>/          attrs: video_id, n_frames, fps, source, sha256, crc32c, complete
        feats [n_frames, dim] float16      one shard per array, chunks of ~1 MB
        valid [n_frames] bool
        timestamps [n_frames] float64      seconds, the decoded frames' true timestamps
        faces/{box [n,4], score [n], landmarks [n,5,2]} float32   visual sets cropped on faces: the face
                                           behind each frame (attrs: detector, align, ...); in sha256
    <cache>/_text/<name>/emb [P, dim]      CLIP text embeddings of a prompt set (attrs: prompts, spec)
    <cache>/manifest.parquet               one row per (feature set, video): the readable summary (+ crc32c)

A video counts as present only once its group carries ``complete: true``, written after its arrays:
a run killed mid-video leaves an incomplete group that the next run deletes and rewrites.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from affcli.cache import coord
from affcli.cache.crc import ATTR as CRC_ATTR
from affcli.cache.crc import array_crc32c
from affcli.cache.errors import CacheError, DoneElsewhere, FingerprintMismatch
from affcli.cache.fingerprint import check_modality, fingerprint_diff, missing_modality

FORMAT_VERSION = 1
VERSION_ATTR = "affcli_cache_version"
TEXT_GROUP = "_text"
TEACHER_GROUP = "teacher"
MANIFEST_FILE = "manifest.parquet"
RESERVED = (TEXT_GROUP, TEACHER_GROUP, coord.LEASE_DIR, "zarr.json", MANIFEST_FILE)
"""Names of the store's own nodes: no feature set may take them (nor a name whose group key or case-folded key is
one of them), so a feature set never lands on the teacher targets, prompt embeddings, leases or metadata."""
MAX_KEY = 200
"""Longest group key (bytes) of a feature set, video or prompt set: file systems cap a name at 255 bytes."""
FACES_GROUP = "faces"
FACE_ARRAYS = ("box", "score", "landmarks")
CHUNK_BYTES = 1 << 20


def feats_chunk_rows(n: int, dim: int) -> int:
    """Rows per inner chunk of a video's [n, dim] float16 feats shard (about CHUNK_BYTES each): the writer's rule,
    which the bulk reader decodes by."""
    return max(1, min(max(n, 1), CHUNK_BYTES // (2 * max(1, dim))))


def safe_key(name: str) -> str:
    """A Zarr node name for a spec or video id: keeps letters, digits, '.', '_' and '-'."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "x"
    return "v" + key if key.startswith("__") else key


def name_problem(name: Any, what: str = "video id") -> str | None:
    """What keeps `name` from naming a group of the store (None: fine): not a string, empty, a control character or
    line break (ids are written to line-based files), or a key longer than MAX_KEY bytes."""
    if not isinstance(name, str) or not name:
        return f"{what} {name!r} is not a non-empty string"
    bad = next((c for c in name if ord(c) < 32 or ord(c) == 127 or len(("a" + c + "a").splitlines()) > 1), None)
    shown = repr(name) if len(name) <= 60 else repr(name[:57]) + "..."
    if bad is not None:
        return f"{what} {shown} holds the control character {bad!r}"
    if len(safe_key(name).encode()) > MAX_KEY:
        return f"{what} {shown} is {len(name)} characters long; its group name may hold at most {MAX_KEY}"
    return None


def spec_problem(spec: Any) -> str | None:
    """What keeps `spec` from naming a feature set (None: fine): name_problem, or a name the store uses itself."""
    p = name_problem(spec, "feature-set name")
    if p is not None:
        return p
    key = safe_key(spec).lower()
    for r in RESERVED:
        if key in (r.lower(), safe_key(r).lower()) or spec.lower() == r.lower():
            return (f"feature-set name {spec!r} is reserved: the cache's own {r!r} node has that name; "
                    f"choose another name")
    return None


def check_version(attrs: Any, path: str) -> None:
    """CacheError unless the root's `affcli_cache_version` is one this code reads (absent: a new or foreign store)."""
    if VERSION_ATTR not in attrs:
        return
    v = attrs[VERSION_ATTR]
    if type(v) is not int or v != FORMAT_VERSION:
        raise CacheError(f"{path}: cache format version {v!r} is not one this affcli reads ({FORMAT_VERSION}); "
                         f"use the affcli that wrote it, or extract into a new cache")


def array_sha256(feats: np.ndarray, valid: np.ndarray, timestamps: np.ndarray,
                 faces: FaceRecord | None = None) -> str:
    """Checksum of a video's arrays as stored (with its face record, if any), so `verify` can detect corruption."""
    h = hashlib.sha256()
    arrays = [np.ascontiguousarray(feats, np.float16), np.ascontiguousarray(valid, bool),
              np.ascontiguousarray(timestamps, np.float64)]
    if faces is not None:
        arrays += [np.ascontiguousarray(faces.box, np.float32), np.ascontiguousarray(faces.score, np.float32),
                   np.ascontiguousarray(faces.landmarks, np.float32)]
    for a in arrays:
        h.update(a)  # the contiguous buffer itself: no copy
    return h.hexdigest()


def text_sha256(prompts: list[str], emb: np.ndarray) -> str:
    """Checksum of a prompt set as stored: its prompts (JSON) and its float32 embeddings."""
    h = hashlib.sha256(json.dumps(list(prompts), ensure_ascii=False).encode())
    h.update(np.ascontiguousarray(emb, np.float32))
    return h.hexdigest()


@dataclass
class FaceRecord:
    """The face behind each frame of a video: what was cropped, so every crop is auditable.

    box [n,4] float32 (x0, y0, x1, y1 in source-frame pixels), score [n] float32 (detector confidence),
    landmarks [n,5,2] float32 (eyes, nose, mouth corners, source pixels); NaN box/landmarks and score 0
    where no face was used; NaN landmarks only for a detector without landmarks (haar). `attrs` holds the
    face settings (detector, align, template, detect_every, margin); on read also video_id, spec, source,
    fps, n_frames, timestamps [n] (seconds) and valid [n].
    """

    box: np.ndarray
    score: np.ndarray
    landmarks: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def check(self, n: int, where: str) -> None:
        """CacheError unless the arrays are box [n,4], score [n], landmarks [n,5,2]."""
        if (self.box.shape != (n, 4) or self.score.shape != (n,) or self.landmarks.shape != (n, 5, 2)):
            raise CacheError(f"{where}: face record shapes box {self.box.shape}, score {self.score.shape}, "
                             f"landmarks {self.landmarks.shape}; expected ({n}, 4), ({n},), ({n}, 5, 2)")


@dataclass
class VideoRecord:
    """One video's arrays as read back from the cache."""

    video_id: str
    feats: np.ndarray
    valid: np.ndarray
    timestamps: np.ndarray
    attrs: dict[str, Any]
    faces: FaceRecord | None = None


class FeatureStore:
    """Narrow API over the Zarr store: create feature sets, write/read a video's arrays, manifest."""

    def __init__(self, path: str | Path, mode: str = "a", storage_options: dict | None = None):
        self.path = str(path)
        self.storage_options, self._fs = storage_options, None
        if mode == "r" and not _exists(self.path):
            raise CacheError(f"{self.path}: no feature cache here")
        try:
            self.root = zarr.open_group(self.path, mode=mode, zarr_format=3, storage_options=storage_options)
        except Exception as e:  # zarr raises several types for a non-zarr folder
            raise CacheError(f"{self.path}: not a readable Zarr v3 feature cache ({type(e).__name__}: {e})") from None
        check_version(self.root.attrs, self.path)
        if not isinstance(self.root.attrs.get("feature_sets", {}), dict):
            raise CacheError(f"{self.path}: root attribute feature_sets is not a table; the cache metadata is damaged")
        if mode != "r" and VERSION_ATTR not in self.root.attrs:
            with self._lease("_root"):
                self._refresh_root()
                if VERSION_ATTR not in self.root.attrs:
                    self.root.attrs.update({VERSION_ATTR: FORMAT_VERSION, "feature_sets": {}})

    # ---- feature sets -------------------------------------------------------------------------
    def feature_sets(self) -> list[str]:
        """Specs of the feature sets in this cache."""
        return sorted(self.root.attrs.get("feature_sets", {}).values())

    def key_of(self, spec: str) -> str:
        """Group name of a feature set; refuses a key already taken by another spec."""
        key = safe_key(spec)
        owner = self.root.attrs.get("feature_sets", {}).get(key)
        if owner is not None and owner != spec:
            raise CacheError(f"{self.path}: feature-set key {key!r} already holds {owner!r}, not {spec!r}")
        return key

    def _fs_group(self, spec: str) -> zarr.Group:
        key = self.key_of(spec)
        if spec not in self.feature_sets():
            raise CacheError(f"{self.path}: no feature set {spec!r}; present: {', '.join(self.feature_sets()) or '(none)'}")
        try:
            grp = self.root[key]
        except Exception as e:  # zarr raises JSON, Unicode, validation and type errors for damaged metadata
            raise CacheError(f"{self.path}: feature set {spec!r}: group metadata unreadable ({_describe(e)})") from None
        if not isinstance(grp, zarr.Group):
            raise CacheError(f"{self.path}: feature set {spec!r}: {key!r} is not a group")
        return grp

    def _subgroups(self, group: zarr.Group, prefix: str) -> tuple[dict[str, zarr.Group], dict[str, str]]:
        """(child groups by name, {name: problem} of children whose metadata does not read): the folder is listed
        itself, so one damaged child never hides the others or stops a reader."""
        if self._fs is None:
            self._fs = coord.store_fs(self.path, self.storage_options)
        fs, root = self._fs
        base = f"{root.rstrip('/')}/{prefix}".rstrip("/")
        try:
            names = sorted(str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(base, detail=True, refresh=True)
                           if e.get("type") == "directory")
        except (FileNotFoundError, NotADirectoryError):
            names = []
        good: dict[str, zarr.Group] = {}
        bad: dict[str, str] = {}
        for n in names:
            if n in (coord.LEASE_DIR,):
                continue
            try:
                g = group[n]
            except Exception as e:
                bad[n] = f"group metadata unreadable ({_describe(e)})"
                continue
            if isinstance(g, zarr.Group):
                good[n] = g
            else:
                bad[n] = "an array where a group belongs"
        return good, bad

    def fingerprint(self, spec: str) -> dict[str, Any]:
        """The fingerprint recorded when the feature set was created."""
        fp = self._fs_group(spec).attrs.get("fingerprint")
        if not isinstance(fp, dict):
            raise CacheError(f"{self.path}: feature set {spec!r}: its fingerprint is missing or not a table")
        return dict(fp)

    def modality(self, spec: str) -> str:
        """The modality (visual, audio) of a feature set, from its fingerprint; one-line error for legacy sets."""
        m = self.fingerprint(spec).get("modality")
        if m is None:
            raise CacheError(missing_modality(self.path, spec))
        return str(m)

    def modalities(self, specs: list[str] | None = None) -> dict[str, str]:
        """{spec: modality} of the given feature sets (all by default)."""
        return {s: self.modality(s) for s in (self.feature_sets() if specs is None else specs)}

    def set_modality(self, spec: str, modality: str) -> None:
        """Record the modality of a feature set written before fingerprints carried one (never changes a set one)."""
        grp = self._fs_group(spec)
        try:
            check_modality(modality, f"{self.path}: feature set {spec!r}")
        except ValueError as e:
            raise CacheError(str(e)) from None
        fp = dict(grp.attrs["fingerprint"])
        if fp.get("modality") not in (None, modality):
            raise CacheError(f"{self.path}: feature set {spec!r} is already {fp['modality']!r}; "
                             f"remove it (`affcli cache rm`) and extract or import it again to change that")
        fp["modality"] = modality
        grp.attrs["fingerprint"] = fp

    def ensure_feature_set(self, spec: str, fingerprint: dict[str, Any]) -> None:
        """Create the feature set, or check that an existing one has the same fingerprint.

        A new set's fingerprint must name its modality and dim; a legacy set without a modality adopts the new one.
        """
        problem = spec_problem(spec)
        if problem is not None:
            raise CacheError(f"{self.path}: {problem}")
        key = self.key_of(spec)
        if spec not in self.feature_sets():
            with self._lease("_root"):
                self._refresh_root()
                if spec not in self.feature_sets():
                    return self._create_feature_set(key, spec, fingerprint)
        if spec in self.feature_sets():
            old = dict(self.root[key].attrs["fingerprint"])
            diff = fingerprint_diff(old, fingerprint)
            if diff:
                f = diff[0]
                raise FingerprintMismatch(
                    f"{self.path}: feature set {spec!r} was extracted with a different fingerprint "
                    f"({f}: cached {old.get(f)!r} vs now {fingerprint.get(f)!r}); "
                    f"use another --cache or remove it with `affcli cache rm {self.path} {spec}`")
            if old.get("versions") != fingerprint.get("versions"):
                warnings.warn(f"{self.path}: feature set {spec!r} was made with library versions "
                              f"{old.get('versions')}, now {fingerprint.get('versions')}", stacklevel=2)
            if old.get("modality") is None and fingerprint.get("modality") is not None:
                self.set_modality(spec, fingerprint["modality"])

    def _create_feature_set(self, key: str, spec: str, fingerprint: dict[str, Any]) -> None:
        """Register a new feature set (the caller holds the root lease)."""
        try:
            check_modality(fingerprint.get("modality"), f"{self.path}: feature set {spec!r}")
        except ValueError as e:
            raise CacheError(str(e)) from None
        if not isinstance(fingerprint.get("dim"), int) or fingerprint["dim"] <= 0:
            raise CacheError(f"{self.path}: feature set {spec!r}: fingerprint needs a positive int dim, "
                             f"not {fingerprint.get('dim')!r}")
        grp = self.root.require_group(key)
        grp.attrs.update({"spec": spec, "fingerprint": fingerprint, "failures": {},
                          "created": _now()})
        sets = dict(self.root.attrs.get("feature_sets", {}))
        sets[key] = spec
        self.root.attrs["feature_sets"] = sets

    def remove_feature_set(self, spec: str) -> None:
        """Delete a feature set and everything in it, and rewrite the manifest without it."""
        key = self.key_of(spec)
        self._fs_group(spec)
        link = Path(self.path) / key
        if "://" not in self.path and link.is_symlink():
            raise CacheError(f"{link}: feature set {spec!r} is a symbolic link to {link.readlink()}; affcli does not "
                             f"delete through links: remove the link (and its target if you mean to) by hand")
        with self._lease("_root"):
            self._refresh_root()
            del self.root[key]
            sets = dict(self.root.attrs.get("feature_sets", {}))
            sets.pop(key, None)
            self.root.attrs["feature_sets"] = sets
        self.write_manifest()

    # ---- videos -------------------------------------------------------------------------------
    def _video_groups(self, spec: str) -> dict[str, zarr.Group]:
        """The readable video groups of a set whose attributes name a video of their own key (see `damaged`)."""
        return self._video_groups_checked(spec)[0]

    def _video_groups_checked(self, spec: str) -> tuple[dict[str, zarr.Group], dict[str, str]]:
        grp = self._fs_group(spec)
        good, bad = self._subgroups(grp, self.key_of(spec))
        for k, g in list(good.items()):
            vid = g.attrs.get("video_id")
            if not isinstance(vid, str) or safe_key(vid) != k:
                bad[k] = f"video_id {vid!r} in its attributes does not name this group"
                del good[k]
        return good, bad

    def damaged(self, spec: str) -> dict[str, str]:
        """{group key: problem} of a set's video groups that cannot be read or do not belong to their key (a reader
        never sees them as videos; `cache verify` reports them)."""
        return self._video_groups_checked(spec)[1]

    def warn_damaged(self, specs: list[str]) -> None:
        """One warning line per feature set naming its video groups that cannot be read (left out of every read), so
        a command listing the cache's videos never drops one silently."""
        from affcli.common.notices import warn

        for spec in specs:
            bad = self.damaged(spec)
            if bad:
                shown = ", ".join(f"{k} ({p})" for k, p in list(bad.items())[:3]) + (" ..." if len(bad) > 3 else "")
                warn(f"{self.path}: feature set {spec!r}: {len(bad)} video group(s) cannot be read, left out: {shown}; "
                     f"`affcli cache verify` lists them")

    def videos(self, spec: str, complete: bool = True) -> list[str]:
        """Ids of the videos of a feature set (only complete ones unless complete=False)."""
        out = []
        for _, g in self._video_groups(spec).items():
            if not complete or g.attrs.get("complete"):
                out.append(g.attrs.get("video_id", ""))
        return sorted(out)

    def incomplete(self, spec: str) -> list[str]:
        """Video groups left behind by an interrupted write."""
        return sorted(k for k, g in self._video_groups(spec).items() if not g.attrs.get("complete"))

    def has_video(self, spec: str, video_id: str) -> bool:
        """True if the video's arrays were completely written for this feature set."""
        vg = self._video_group(spec, video_id, damaged_ok=True)
        return vg is not None and bool(vg.attrs.get("complete")) and vg.attrs.get("video_id") == video_id

    def _video_group(self, spec: str, video_id: str, damaged_ok: bool = False) -> zarr.Group | None:
        """A video's group (None when absent; a damaged one is None with `damaged_ok`, else a CacheError)."""
        grp, key = self._fs_group(spec), safe_key(video_id)
        try:
            vg = grp[key] if key in grp else None
        except Exception as e:
            if damaged_ok:
                return None
            raise CacheError(f"{self.path}: feature set {spec!r}, video {video_id!r}: group metadata unreadable "
                             f"({_describe(e)})") from None
        return vg if isinstance(vg, zarr.Group) else None

    def write_video(self, spec: str, video_id: str, feats: np.ndarray, valid: np.ndarray,
                    timestamps: np.ndarray, fps: float, source: str = "", faces: FaceRecord | None = None,
                    extras: dict[str, np.ndarray] | None = None) -> None:
        """Write one video's arrays under its lease (first writer wins: DoneElsewhere if another run completed it)."""
        problem = name_problem(video_id)
        if problem is not None:
            raise CacheError(f"{self.path}: {problem}")
        with self._lease(f"{self.key_of(spec)}/{safe_key(video_id)}"):
            self._write_video(spec, video_id, feats, valid, timestamps, fps, source, faces, extras)
        self._forget_failure(spec, video_id)

    def _write_video(self, spec: str, video_id: str, feats: np.ndarray, valid: np.ndarray,
                     timestamps: np.ndarray, fps: float, source: str = "", faces: FaceRecord | None = None,
                     extras: dict[str, np.ndarray] | None = None) -> None:
        """Write one video's arrays (and its face record beside `valid`, for visual sets cropped on faces; and any
        per-row `extras`, see cache.rows); the `complete` mark goes last, so a kill never leaves a false video."""
        n = int(feats.shape[0])
        if feats.ndim != 2 or valid.shape != (n,) or timestamps.shape != (n,):
            raise CacheError(f"{self.path}: {video_id}: inconsistent shapes feats {feats.shape}, "
                             f"valid {valid.shape}, timestamps {timestamps.shape}")
        if faces is not None:
            faces.check(n, f"{self.path}: {video_id}")
        grp = self._fs_group(spec)
        dim = grp.attrs["fingerprint"].get("dim")
        if dim is not None and feats.shape[1] != dim:
            raise CacheError(f"{self.path}: {video_id}: {spec} features have dim {feats.shape[1]}, set expects {dim}")
        key = safe_key(video_id)
        if self._video_group(spec, video_id, damaged_ok=True) is None and _node_exists(self, f"{self.key_of(spec)}/{key}"):
            del grp[key]  # a group whose metadata does not read: nobody's video, rewritten like an incomplete one
        if key in grp:
            other = grp[key].attrs.get("video_id")
            if other != video_id:
                raise CacheError(f"{self.path}: video ids {other!r} and {video_id!r} map to the same key {key!r}")
            if grp[key].attrs.get("complete"):
                raise DoneElsewhere(f"{self.path}: {video_id} is already complete in {spec}; refusing to overwrite")
            del grp[key]
        f16 = np.ascontiguousarray(feats, dtype=np.float16)
        if not np.isfinite(f16).all():
            raise CacheError(f"{self.path}: {video_id}: {spec} features contain NaN or inf")
        vg = grp.create_group(key, attributes={"video_id": video_id, "complete": False})
        d = max(1, f16.shape[1])
        rows = feats_chunk_rows(n, d)
        shard = (max(1, -(-max(n, 1) // rows) * rows),)
        vg.create_array("feats", data=f16, chunks=(rows, d), shards=(shard[0], d), compressors=None)
        vg.create_array("valid", data=np.ascontiguousarray(valid, dtype=bool))
        vg.create_array("timestamps", data=np.ascontiguousarray(timestamps, dtype=np.float64))
        extras = {name: np.ascontiguousarray(arr) for name, arr in (extras or {}).items()}
        for name, arr in extras.items():
            vg.create_array(name, data=arr)
        if faces is not None:
            faces = _write_faces(vg, faces)
        vg.attrs.update({"n_frames": n, "fps": float(fps), "source": str(source), "written": _now(),
                         "sha256": array_sha256(f16, valid, timestamps, faces),
                         CRC_ATTR: {**array_crc32c(stored_arrays(f16, valid, timestamps, faces)),
                                    **array_crc32c(extras)}})
        vg.attrs["complete"] = True

    def record_failure(self, spec: str, video_id: str, error: str) -> None:
        """Remember why a video failed, for the manifest and the next run's summary (not when another run has
        completed it meanwhile: its failure is then nobody's)."""
        with self._lease(f"{self.key_of(spec)}/_failures"):
            if self.has_video(spec, video_id):
                return
            grp = self._fs_group(spec)
            failures = dict(grp.attrs.get("failures", {}))
            failures[video_id] = error
            grp.attrs["failures"] = failures

    def _forget_failure(self, spec: str, video_id: str) -> None:
        """Drop a video's failure record once it is complete (read-modify-write under the set's failures lease)."""
        grp = self._fs_group(spec)
        if video_id not in grp.attrs.get("failures", {}):
            return
        with self._lease(f"{self.key_of(spec)}/_failures"):
            grp = self._fs_group(spec)
            failures = dict(grp.attrs.get("failures", {}))
            if failures.pop(video_id, None) is not None:
                grp.attrs["failures"] = failures

    # ---- concurrency --------------------------------------------------------------------------
    def _lease(self, name: str):
        """Context manager holding lease `name` of this store (see cache/coord.py)."""
        if self._fs is None:
            self._fs = coord.store_fs(self.path, self.storage_options)
        return coord.lease(self._fs[0], self._fs[1], name)

    def _refresh_root(self) -> None:
        """Re-read the root attributes another writer may have changed since this store was opened."""
        self.root = zarr.open_group(self.path, mode="r+", zarr_format=3, storage_options=self.storage_options)
        check_version(self.root.attrs, self.path)

    def failures(self, spec: str) -> dict[str, str]:
        """{video: error} of videos whose last extraction failed."""
        return dict(self._fs_group(spec).attrs.get("failures", {}))

    def read_video(self, spec: str, video_id: str, faces: bool = False) -> VideoRecord:
        """One complete video's arrays; `faces` also reads its face record (None where the set has none)."""
        vg = self._video_group(spec, video_id)
        if vg is None or not vg.attrs.get("complete"):
            raise CacheError(f"{self.path}: video {video_id!r} is not (completely) in feature set {spec!r}")
        face = _read_faces(vg) if faces else None
        return VideoRecord(video_id, vg["feats"][:], vg["valid"][:], vg["timestamps"][:], dict(vg.attrs), face)

    def has_faces(self, spec: str, video_id: str) -> bool:
        """True if the video is complete in `spec` and carries a face record."""
        return self.has_video(spec, video_id) and FACES_GROUP in self._fs_group(spec)[safe_key(video_id)]

    def read_faces(self, video_id: str, spec: str | None = None) -> FaceRecord:
        """The face record of a video: from feature set `spec`, else from the first visual set holding one
        (sets extracted in one run share it). attrs carry video_id, spec, source, fps, n_frames, timestamps, valid."""
        specs = [spec] if spec is not None else self.feature_sets()
        for s in specs:
            if self.has_faces(s, video_id):
                vg = self._fs_group(s)[safe_key(video_id)]
                try:
                    rec = _read_faces(vg)
                    ts, valid = vg["timestamps"][:], vg["valid"][:]
                except Exception as e:
                    raise CacheError(f"{self.path}: feature set {s!r}, video {video_id!r}: face record unreadable "
                                     f"({_describe(e)})") from None
                a = dict(vg.attrs)
                self._check_crc(s, video_id, a, {**{f"{FACES_GROUP}/{k}": getattr(rec, k) for k in FACE_ARRAYS},
                                                 "timestamps": ts, "valid": valid})
                rec.check(int(a.get("n_frames") or 0), f"{self.path}: feature set {s!r}, video {video_id!r}")
                rec.attrs.update(video_id=video_id, spec=s, source=a.get("source", ""), fps=a.get("fps"),
                                 n_frames=a.get("n_frames"), timestamps=ts, valid=valid)
                return rec
        where = f"feature set {spec!r}" if spec is not None else "any feature set"
        raise CacheError(f"{self.path}: no face record for video {video_id!r} in {where} "
                         f"(extracted with --face none, from a frames folder, or not extracted)")

    def read_extra(self, spec: str, video_id: str, name: str) -> np.ndarray | None:
        """A per-row array written with `write_video(extras=...)`; None when the video has none of that name."""
        vg = self._video_group(spec, video_id)
        if vg is None or not vg.attrs.get("complete"):
            raise CacheError(f"{self.path}: video {video_id!r} is not (completely) in feature set {spec!r}")
        try:
            arr = vg[name][:] if name in vg else None
        except Exception as e:
            raise CacheError(f"{self.path}: feature set {spec!r}, video {video_id!r}: {name} unreadable "
                             f"({_describe(e)})") from None
        if arr is not None:
            self._check_crc(spec, video_id, dict(vg.attrs), {name: arr})
        return arr

    def _check_crc(self, spec: str, video_id: str, attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """CacheError naming the first array that disagrees with the CRC-32C its video recorded (arrays written
        before their CRC was recorded are not checked here)."""
        crc = attrs.get(CRC_ATTR)
        if not isinstance(crc, dict):
            return
        for name, arr in arrays.items():
            if name in crc and crc[name] != array_crc32c({name: arr})[name]:
                raise CacheError(f"{self.path}: feature set {spec!r}, video {video_id!r}: checksum mismatch in "
                                 f"{name} (changed after writing); re-extract it")

    def video_array(self, spec: str, video_id: str) -> zarr.Array:
        """The lazy Zarr array of one video's features (for dask)."""
        return self._fs_group(spec)[safe_key(video_id)]["feats"]

    def video_attrs(self, spec: str, video_id: str) -> dict[str, Any]:
        """Attributes of one video group (n_frames, fps, source, sha256, ...)."""
        return dict(self._fs_group(spec)[safe_key(video_id)].attrs)

    # ---- text embeddings ----------------------------------------------------------------------
    def write_text_embeddings(self, name: str, spec: str, prompts: list[str], emb: np.ndarray) -> None:
        """Store CLIP text embeddings of a named prompt set, produced by backbone `spec`."""
        key = safe_key(f"{name}@{spec}")
        with self._lease(f"{TEXT_GROUP}/{key}"):
            self._write_text(key, name, spec, prompts, emb)

    def _write_text(self, key: str, name: str, spec: str, prompts: list[str], emb: np.ndarray) -> None:
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(prompts) or not np.isfinite(emb).all():
            raise CacheError(f"{self.path}: text embeddings of {name!r}: {emb.shape} for {len(prompts)} prompts, or "
                             f"non-finite values")
        if len(key.encode()) > MAX_KEY:
            raise CacheError(f"{self.path}: prompt set {name!r} of {spec!r}: name too long for a group name")
        try:
            tg = self.root.require_group(TEXT_GROUP)
            if _node_exists(self, f"{TEXT_GROUP}/{key}"):
                del tg[key]
        except Exception as e:  # damaged `_text` metadata: refuse rather than write beside it
            raise CacheError(f"{self.path}: {TEXT_GROUP} group unreadable ({_describe(e)}); `affcli cache verify` "
                             f"names it") from None
        g = tg.create_group(key, attributes={"name": name, "spec": spec, "prompts": list(prompts),
                                              "fingerprint": self.fingerprint(spec) if spec in self.feature_sets() else {},
                                              "complete": False})
        g.create_array("emb", data=emb)
        g.attrs.update({"sha256": text_sha256(prompts, emb), "complete": True})

    def _text_groups(self) -> tuple[dict[str, zarr.Group], dict[str, str]]:
        """(readable prompt-set groups by key, {key: problem} of those that are not, `_text` itself included)."""
        return self.area_groups(TEXT_GROUP)

    def area_groups(self, area: str) -> tuple[dict[str, zarr.Group], dict[str, str]]:
        """The readable subgroups of a top-level area (`_text`, `teacher`) by key, and {key: problem} of those whose
        metadata does not read (the area's own included); nothing when the area does not exist."""
        if not _node_exists(self, area):
            return {}, {}
        try:
            g = self.root[area]
        except Exception as e:
            return {}, {area: f"group metadata unreadable ({_describe(e)})"}
        return self._subgroups(g, area)

    def text_sets(self) -> list[tuple[str, str]]:
        """(prompt-set name, spec) pairs stored in the cache (groups that cannot be read, or whose attributes do not
        name both, are left to `cache verify`, which reports them)."""
        out = []
        for _, g in self._text_groups()[0].items():
            n, s = g.attrs.get("name"), g.attrs.get("spec")
            if isinstance(n, str) and isinstance(s, str) and g.attrs.get("complete", True):
                out.append((n, s))
        return sorted(out)

    def read_text_embeddings(self, name: str, spec: str | None = None) -> tuple[list[str], np.ndarray, dict]:
        """(prompts, embeddings [P, D], attrs) of a prompt set; `spec` picks among several CLIP models. Checked: a
        prompt set written with a checksum (`sha256` over prompts and embeddings) must match it, and shapes and
        values must hold (CacheError naming the set otherwise); sets written before the checksum are read as they
        are (`cache verify` names them; re-encoding adds it)."""
        matches = [(n, s) for n, s in self.text_sets() if n == name and (spec is None or s == spec)]
        if not matches:
            have = ", ".join(f"{n}@{s}" for n, s in self.text_sets()) or "(none)"
            raise CacheError(f"{self.path}: no text embeddings for prompt set {name!r}"
                             f"{'' if spec is None else ' of ' + spec}; present: {have}")
        if len(matches) > 1:
            raise CacheError(f"{self.path}: prompt set {name!r} exists for several models "
                             f"({', '.join(s for _, s in matches)}); name one")
        where = f"{self.path}: prompt set {matches[0][0]}@{matches[0][1]}"
        try:
            g = self._text_groups()[0][safe_key(f"{matches[0][0]}@{matches[0][1]}")]
            attrs = dict(g.attrs)
            prompts, emb = attrs["prompts"], g["emb"][:]
        except Exception as e:  # a missing or undecodable array or metadata
            raise CacheError(f"{where}: unreadable ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise CacheError(f"{where}: its prompts attribute is not a list of strings")
        if emb.dtype != np.float32 or emb.ndim != 2 or emb.shape[0] != len(prompts) or not np.isfinite(emb).all():
            raise CacheError(f"{where}: embeddings {emb.shape} {emb.dtype} for {len(prompts)} prompts, or non-finite "
                             f"values")
        if "sha256" in attrs and attrs["sha256"] != text_sha256(prompts, emb):
            raise CacheError(f"{where}: checksum mismatch (embeddings or prompts changed after writing); encode the "
                             f"prompts again (affcli prompts)")
        return list(prompts), emb, attrs

    def checked_text_sets(self, prefer: list[str] | None = None, specs: list[str] | None = None) -> dict[str, np.ndarray]:
        """{prompt-set name: embeddings} of every readable prompt set (of `specs` only, when given); a name stored
        for several backbones takes the first of `prefer`. A set that fails its checks is left out with one warning
        line naming it (a loss that reads it then refuses the run)."""
        from affcli.common.notices import warn

        rank = {f: i for i, f in enumerate(prefer or [])}
        out: dict[str, np.ndarray] = {}
        for key, problem in self._text_groups()[1].items():
            warn(f"{self.path}: prompt-set group {key}: {problem}; left out")
        for name, spec in sorted(self.text_sets(), key=lambda ns: rank.get(ns[1], len(rank))):
            if name in out or (specs is not None and spec not in specs):
                continue
            try:
                out[name] = self.read_text_embeddings(name, spec)[1]
            except CacheError as e:
                warn(f"{e}; left out")
        return out

    # ---- manifest -----------------------------------------------------------------------------
    def manifest(self):
        """One row per (feature set, video): frames, fps, status ok/failed/incomplete, error, and the per-array
        CRC-32C (JSON) that `load_table` checks a video's data against without reading its group."""
        import polars as pl

        rows = []
        for spec in self.feature_sets():
            by_video = {}
            for _, g in self._video_groups(spec).items():
                a = g.attrs
                by_video[a.get("video_id", "")] = {
                    "feature_set": spec, "video": a.get("video_id", ""), "n_frames": a.get("n_frames"),
                    "fps": a.get("fps"), "status": "ok" if a.get("complete") else "incomplete",
                    "error": None, "source": a.get("source"), "written": a.get("written"),
                    CRC_ATTR: json.dumps(a[CRC_ATTR], sort_keys=True) if isinstance(a.get(CRC_ATTR), dict) else None}
            for vid, err in self.failures(spec).items():
                if vid in by_video and by_video[vid]["status"] == "ok":
                    continue
                by_video[vid] = {"feature_set": spec, "video": vid, "n_frames": None, "fps": None,
                                 "status": "failed", "error": err, "source": None, "written": None, CRC_ATTR: None}
            rows += by_video.values()
        schema = {"feature_set": pl.String, "video": pl.String, "n_frames": pl.Int64, "fps": pl.Float64,
                  "status": pl.String, "error": pl.String, "source": pl.String, "written": pl.String,
                  CRC_ATTR: pl.String}
        return pl.DataFrame(rows, schema=schema).sort(["feature_set", "video"])

    def write_manifest(self) -> Path | str:
        """Rebuild manifest.parquet from the per-video groups (under the manifest lease, so the last writer's
        rebuild sees every other writer's videos); returns its path (a URL for object stores)."""
        with self._lease("_manifest"):
            self._refresh_root()
            table = self.manifest()
            if coord.is_url(self.path):
                fs, root = self._fs
                with fs.open(f"{root.rstrip('/')}/manifest.parquet", "wb") as f:
                    table.write_parquet(f)
                return f"{self.path.rstrip('/')}/manifest.parquet"
            path = Path(self.path) / "manifest.parquet"
            tmp = path.with_name(f".manifest.{coord.owner_token().rsplit(':', 1)[1]}.tmp")
            table.write_parquet(tmp)
            tmp.replace(path)
            return path


def _write_faces(vg: zarr.Group, faces: FaceRecord) -> FaceRecord:
    """Store a face record as the `faces` subgroup of a video group; returns it as stored (float32)."""
    stored = FaceRecord(np.ascontiguousarray(faces.box, np.float32), np.ascontiguousarray(faces.score, np.float32),
                        np.ascontiguousarray(faces.landmarks, np.float32), dict(faces.attrs))
    fg = vg.create_group(FACES_GROUP, attributes=_json_attrs(stored.attrs))
    for name in FACE_ARRAYS:
        fg.create_array(name, data=getattr(stored, name))
    return stored


def stored_arrays(feats: np.ndarray, valid: np.ndarray, timestamps: np.ndarray,
                   faces: FaceRecord | None) -> dict[str, np.ndarray]:
    """{path in the video group: array as stored} of the arrays a video's checksums cover."""
    out = {"feats": feats, "valid": np.ascontiguousarray(valid, bool),
           "timestamps": np.ascontiguousarray(timestamps, np.float64)}
    if faces is not None:
        out.update({f"{FACES_GROUP}/{k}": getattr(faces, k) for k in FACE_ARRAYS})
    return out


def _read_faces(vg: zarr.Group) -> FaceRecord | None:
    if FACES_GROUP not in vg:
        return None
    fg = vg[FACES_GROUP]
    return FaceRecord(fg["box"][:], fg["score"][:], fg["landmarks"][:], dict(fg.attrs))


def _json_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()
            if isinstance(v, (str, int, float, bool, list, tuple, dict, np.ndarray)) or v is None}


def _node_exists(store: "FeatureStore", key: str) -> bool:
    """Whether a folder (node) exists under the store root, without reading its metadata."""
    if store._fs is None:
        store._fs = coord.store_fs(store.path, store.storage_options)
    fs, root = store._fs
    return bool(fs.exists(f"{root.rstrip('/')}/{key}"))


def _describe(e: BaseException) -> str:
    msg = " ".join(str(e).split())[:160]
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _exists(path: str) -> bool:
    return "://" in path or (Path(path) / "zarr.json").exists()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
