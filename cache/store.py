"""The on-disk feature cache: one Zarr v3 store, a group per feature set, one sharded array per video.

Layout (all names sanitised; the exact spec / video id live in attributes)::

    <cache>/zarr.json                      root attrs: format version, {key: spec} of feature sets
    <cache>/<fs-key>/zarr.json             attrs: spec, fingerprint, failures {video: error}
    <cache>/<fs-key>/<video-key>/          attrs: video_id, n_frames, fps, source, sha256, complete
        feats [n_frames, dim] float16      one shard per array, chunks of ~1 MB
        valid [n_frames] bool
        timestamps [n_frames] float64      seconds, the decoded frames' true timestamps
    <cache>/_text/<name>/emb [P, dim]      CLIP text embeddings of a prompt set (attrs: prompts, spec)
    <cache>/manifest.parquet               one row per (feature set, video): the readable summary

A video counts as present only once its group carries ``complete: true``, written after its arrays:
a run killed mid-video leaves an incomplete group that the next run deletes and rewrites.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from affcli.cache.errors import CacheError, FingerprintMismatch
from affcli.cache.fingerprint import check_modality, fingerprint_diff, missing_modality

FORMAT_VERSION = 1
TEXT_GROUP = "_text"
CHUNK_BYTES = 1 << 20


def safe_key(name: str) -> str:
    """A Zarr node name for a spec or video id: keeps letters, digits, '.', '_' and '-'."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "x"
    return "v" + key if key.startswith("__") else key


def array_sha256(feats: np.ndarray, valid: np.ndarray, timestamps: np.ndarray) -> str:
    """Checksum of a video's arrays as stored, so `verify` can detect silent corruption."""
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(feats, np.float16), np.ascontiguousarray(valid, bool),
              np.ascontiguousarray(timestamps, np.float64)):
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class VideoRecord:
    """One video's arrays as read back from the cache."""

    video_id: str
    feats: np.ndarray
    valid: np.ndarray
    timestamps: np.ndarray
    attrs: dict[str, Any]


class FeatureStore:
    """Narrow API over the Zarr store: create feature sets, write/read a video's arrays, manifest."""

    def __init__(self, path: str | Path, mode: str = "a", storage_options: dict | None = None):
        self.path = str(path)
        if mode == "r" and not _exists(self.path):
            raise CacheError(f"{self.path}: no feature cache here")
        try:
            self.root = zarr.open_group(self.path, mode=mode, zarr_format=3, storage_options=storage_options)
        except Exception as e:  # zarr raises several types for a non-zarr folder
            raise CacheError(f"{self.path}: not a readable Zarr v3 feature cache ({type(e).__name__}: {e})") from None
        if mode != "r" and "affcli_cache_version" not in self.root.attrs:
            self.root.attrs.update({"affcli_cache_version": FORMAT_VERSION, "feature_sets": {}})

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
        return self.root[key]

    def fingerprint(self, spec: str) -> dict[str, Any]:
        """The fingerprint recorded when the feature set was created."""
        return dict(self._fs_group(spec).attrs["fingerprint"])

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
        key = self.key_of(spec)
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
            return
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
        del self.root[key]
        sets = dict(self.root.attrs.get("feature_sets", {}))
        sets.pop(key, None)
        self.root.attrs["feature_sets"] = sets
        self.write_manifest()

    # ---- videos -------------------------------------------------------------------------------
    def _video_groups(self, spec: str) -> dict[str, zarr.Group]:
        return {k: g for k, g in self._fs_group(spec).groups()}

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
        grp = self._fs_group(spec)
        key = safe_key(video_id)
        if key not in grp:
            return False
        return bool(grp[key].attrs.get("complete")) and grp[key].attrs.get("video_id") == video_id

    def write_video(self, spec: str, video_id: str, feats: np.ndarray, valid: np.ndarray,
                    timestamps: np.ndarray, fps: float, source: str = "") -> None:
        """Write one video's arrays; the `complete` mark goes last, so a kill never leaves a false video."""
        n = int(feats.shape[0])
        if feats.ndim != 2 or valid.shape != (n,) or timestamps.shape != (n,):
            raise CacheError(f"{self.path}: {video_id}: inconsistent shapes feats {feats.shape}, "
                             f"valid {valid.shape}, timestamps {timestamps.shape}")
        grp = self._fs_group(spec)
        dim = grp.attrs["fingerprint"].get("dim")
        if dim is not None and feats.shape[1] != dim:
            raise CacheError(f"{self.path}: {video_id}: {spec} features have dim {feats.shape[1]}, set expects {dim}")
        key = safe_key(video_id)
        if key in grp:
            other = grp[key].attrs.get("video_id")
            if other != video_id:
                raise CacheError(f"{self.path}: video ids {other!r} and {video_id!r} map to the same key {key!r}")
            if grp[key].attrs.get("complete"):
                raise CacheError(f"{self.path}: {video_id} is already complete in {spec}; refusing to overwrite")
            del grp[key]
        f16 = np.ascontiguousarray(feats, dtype=np.float16)
        if not np.isfinite(f16).all():
            raise CacheError(f"{self.path}: {video_id}: {spec} features contain NaN or inf")
        vg = grp.create_group(key, attributes={"video_id": video_id, "complete": False})
        d = max(1, f16.shape[1])
        rows = max(1, min(max(n, 1), CHUNK_BYTES // (2 * d)))
        shard = (max(1, -(-max(n, 1) // rows) * rows),)
        vg.create_array("feats", data=f16, chunks=(rows, d), shards=(shard[0], d), compressors=None)
        vg.create_array("valid", data=np.ascontiguousarray(valid, dtype=bool))
        vg.create_array("timestamps", data=np.ascontiguousarray(timestamps, dtype=np.float64))
        vg.attrs.update({"n_frames": n, "fps": float(fps), "source": str(source), "written": _now(),
                         "sha256": array_sha256(f16, valid, timestamps)})
        vg.attrs["complete"] = True
        failures = dict(grp.attrs.get("failures", {}))
        if failures.pop(video_id, None) is not None:
            grp.attrs["failures"] = failures

    def record_failure(self, spec: str, video_id: str, error: str) -> None:
        """Remember why a video failed, for the manifest and the next run's summary."""
        grp = self._fs_group(spec)
        failures = dict(grp.attrs.get("failures", {}))
        failures[video_id] = error
        grp.attrs["failures"] = failures

    def failures(self, spec: str) -> dict[str, str]:
        """{video: error} of videos whose last extraction failed."""
        return dict(self._fs_group(spec).attrs.get("failures", {}))

    def read_video(self, spec: str, video_id: str) -> VideoRecord:
        """One complete video's arrays."""
        grp = self._fs_group(spec)
        key = safe_key(video_id)
        if key not in grp or not grp[key].attrs.get("complete"):
            raise CacheError(f"{self.path}: video {video_id!r} is not (completely) in feature set {spec!r}")
        vg = grp[key]
        return VideoRecord(video_id, vg["feats"][:], vg["valid"][:], vg["timestamps"][:], dict(vg.attrs))

    def video_array(self, spec: str, video_id: str) -> zarr.Array:
        """The lazy Zarr array of one video's features (for dask)."""
        return self._fs_group(spec)[safe_key(video_id)]["feats"]

    def video_attrs(self, spec: str, video_id: str) -> dict[str, Any]:
        """Attributes of one video group (n_frames, fps, source, sha256, ...)."""
        return dict(self._fs_group(spec)[safe_key(video_id)].attrs)

    # ---- text embeddings ----------------------------------------------------------------------
    def write_text_embeddings(self, name: str, spec: str, prompts: list[str], emb: np.ndarray) -> None:
        """Store CLIP text embeddings of a named prompt set, produced by backbone `spec`."""
        tg = self.root.require_group(TEXT_GROUP)
        key = safe_key(f"{name}@{spec}")
        if key in tg:
            del tg[key]
        g = tg.create_group(key, attributes={"name": name, "spec": spec, "prompts": list(prompts),
                                              "fingerprint": self.fingerprint(spec) if spec in self.feature_sets() else {}})
        g.create_array("emb", data=np.ascontiguousarray(emb, dtype=np.float32))

    def text_sets(self) -> list[tuple[str, str]]:
        """(prompt-set name, spec) pairs stored in the cache."""
        if TEXT_GROUP not in self.root:
            return []
        return sorted((g.attrs["name"], g.attrs["spec"]) for _, g in self.root[TEXT_GROUP].groups())

    def read_text_embeddings(self, name: str, spec: str | None = None) -> tuple[list[str], np.ndarray, dict]:
        """(prompts, embeddings [P, D], attrs) of a prompt set; `spec` picks among several CLIP models."""
        matches = [(n, s) for n, s in self.text_sets() if n == name and (spec is None or s == spec)]
        if not matches:
            have = ", ".join(f"{n}@{s}" for n, s in self.text_sets()) or "(none)"
            raise CacheError(f"{self.path}: no text embeddings for prompt set {name!r}"
                             f"{'' if spec is None else ' of ' + spec}; present: {have}")
        if len(matches) > 1:
            raise CacheError(f"{self.path}: prompt set {name!r} exists for several models "
                             f"({', '.join(s for _, s in matches)}); name one")
        g = self.root[TEXT_GROUP][safe_key(f"{matches[0][0]}@{matches[0][1]}")]
        return list(g.attrs["prompts"]), g["emb"][:], dict(g.attrs)

    # ---- manifest -----------------------------------------------------------------------------
    def manifest(self):
        """One row per (feature set, video): frames, fps, status ok/failed/incomplete, error."""
        import polars as pl

        rows = []
        for spec in self.feature_sets():
            for _, g in self._video_groups(spec).items():
                a = g.attrs
                rows.append({"feature_set": spec, "video": a.get("video_id", ""), "n_frames": a.get("n_frames"),
                             "fps": a.get("fps"), "status": "ok" if a.get("complete") else "incomplete",
                             "error": None, "source": a.get("source"), "written": a.get("written")})
            for vid, err in self.failures(spec).items():
                if not self.has_video(spec, vid):
                    rows.append({"feature_set": spec, "video": vid, "n_frames": None, "fps": None,
                                 "status": "failed", "error": err, "source": None, "written": None})
        schema = {"feature_set": pl.String, "video": pl.String, "n_frames": pl.Int64, "fps": pl.Float64,
                  "status": pl.String, "error": pl.String, "source": pl.String, "written": pl.String}
        return pl.DataFrame(rows, schema=schema).sort(["feature_set", "video"])

    def write_manifest(self) -> Path | None:
        """Rewrite manifest.parquet beside the arrays (local stores); returns its path."""
        if "://" in self.path:
            return None
        path = Path(self.path) / "manifest.parquet"
        tmp = path.with_name(".manifest.parquet.tmp")
        self.manifest().write_parquet(tmp)
        tmp.replace(path)
        return path


def _exists(path: str) -> bool:
    return "://" in path or (Path(path) / "zarr.json").exists()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
