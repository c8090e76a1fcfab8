"""HDF5 interchange (h5py): export a cache's feature sets, import ours or other teams' per-video arrays.

Both directions leave nothing half done: an export is written to a temporary file beside its destination and renamed
over it (never over a device, a folder or, without `overwrite`, an existing file); an import checks the whole file
(names, shapes, reserved names, collisions with what the cache holds) before it writes anything, and a write that
fails after all (values a video may not hold) removes what the import had written.
"""
from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from affcli.cache.checked import read_checked
from affcli.cache.errors import CacheError
from affcli.cache.fingerprint import MODALITIES, check_modality, fingerprint_diff, make_fingerprint
from affcli.cache.store import FeatureStore, name_problem, safe_key, spec_problem

H5_VERSION = 1


def export_target(out: str | Path, overwrite: bool = False) -> Path:
    """`out` if an export may be written there: its folder exists, and nothing is there or (with `overwrite`) a
    regular file; a device, a folder, a dangling link or any other non-file is refused (CacheError, one line)."""
    out = Path(out)
    parent = out.parent
    if not parent.is_dir():
        raise CacheError(f"{out}: folder {parent} does not exist (create it first)")
    if out.is_symlink() or out.exists():
        try:
            mode = os.stat(out).st_mode
        except OSError:
            raise CacheError(f"{out}: a link to nothing; export-h5 writes only regular files") from None
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
                else "not a regular file"
            raise CacheError(f"{out}: is {kind}; export-h5 writes only regular files")
        if not overwrite:
            raise CacheError(f"{out}: exists; pass --overwrite to replace it")
    return out


def export_h5(cache: str | Path, out: str | Path, specs: list[str] | None = None, overwrite: bool = False) -> Path:
    """Write `/<set>/<video>/{feats,valid,timestamps}` with the spec, fingerprint and video attributes; every video is
    a checked read. Written to a temporary file beside `out` and renamed over it; removed when anything fails."""
    out = export_target(out, overwrite)
    store = FeatureStore(cache, mode="r")
    specs = specs or store.feature_sets()
    fingerprints = {spec: store.fingerprint(spec) for spec in specs}  # an unknown set is refused before writing
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["affcli_h5_version"] = H5_VERSION
            for spec in specs:
                g = f.create_group(safe_key(spec))
                g.attrs["spec"] = spec
                g.attrs["fingerprint"] = json.dumps(fingerprints[spec], sort_keys=True)
                for vid in store.videos(spec):
                    rec = read_checked(store, spec, vid)
                    vg = g.create_group(safe_key(vid))
                    vg.attrs["video_id"] = vid
                    vg.attrs["fps"] = float(rec.attrs.get("fps") or 0.0)
                    vg.attrs["source"] = str(rec.attrs.get("source", ""))
                    vg.create_dataset("feats", data=rec.feats)
                    vg.create_dataset("valid", data=rec.valid)
                    vg.create_dataset("timestamps", data=rec.timestamps)
            for name, spec in store.text_sets():
                prompts, emb, _ = store.read_text_embeddings(name, spec)
                tg = f.require_group("_text").create_group(safe_key(f"{name}@{spec}"))
                tg.attrs.update({"name": name, "spec": spec, "prompts": json.dumps(prompts)})
                tg.create_dataset("emb", data=emb)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


# ---- import: a plan checked whole, then written ------------------------------------------------------------------

@dataclass
class _Video:
    video: str
    read: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]
    fps: float
    source: str


@dataclass
class _Set:
    spec: str
    fingerprint: dict[str, Any]
    videos: list[_Video] = field(default_factory=list)


@dataclass
class _Text:
    name: str
    spec: str
    prompts: list[str]
    emb: h5py.Dataset


def _attr_str(node: Any, key: str, where: str) -> str:
    v = node.attrs.get(key)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if not isinstance(v, str):
        raise CacheError(f"{where}: attribute {key!r} is missing or not text")
    return v


def _dataset(node: Any, key: str, where: str) -> h5py.Dataset:
    d = node.get(key) if isinstance(node, h5py.Group) else None
    if not isinstance(d, h5py.Dataset):
        raise CacheError(f"{where}: no dataset {key!r}")
    return d


def _numeric(d: h5py.Dataset, where: str, kinds: str = "fiub") -> None:
    if d.dtype.kind not in kinds:
        raise CacheError(f"{where}: dataset of type {d.dtype} is not numeric")


def _check_names(spec: str, videos: list[str], src: Path) -> None:
    """Refuse a set name the store uses itself, ids it cannot hold, and two ids that would share one group."""
    problem = spec_problem(spec)
    if problem is not None:
        raise CacheError(f"{src}: {problem}")
    keys: dict[str, str] = {}
    for vid in videos:
        problem = name_problem(vid)
        if problem is not None:
            raise CacheError(f"{src}: feature set {spec!r}: {problem}")
        other = keys.setdefault(safe_key(vid), vid)
        if other != vid:
            raise CacheError(f"{src}: feature set {spec!r}: video ids {other!r} and {vid!r} would share one group "
                             f"({safe_key(vid)!r})")


def _plan_export(f: h5py.File, src: Path, modality: str | None) -> tuple[list[_Set], list[_Text]]:
    """Our own export layout, checked whole: every set's names and fingerprint, every video's datasets and shapes."""
    sets: list[_Set] = []
    for key, g in f.items():
        if key == "_text":
            continue
        where = f"{src}: /{key}"
        if not isinstance(g, h5py.Group):
            raise CacheError(f"{where}: not a group of videos")
        sp = _attr_str(g, "spec", where)
        try:
            fp = json.loads(_attr_str(g, "fingerprint", where))
        except ValueError:
            raise CacheError(f"{where}: attribute 'fingerprint' is not JSON") from None
        if not isinstance(fp, dict):
            raise CacheError(f"{where}: attribute 'fingerprint' is not a table")
        if fp.get("modality") is None:
            if modality is None:
                raise CacheError(f"{src}: feature set {sp!r} was exported without a modality; "
                                 f"pass --modality {'|'.join(MODALITIES)}")
            fp["modality"] = modality
        dim = fp.get("dim")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise CacheError(f"{where}: fingerprint dim {dim!r} is not a positive integer")
        plan = _Set(sp, fp)
        for vkey, vg in g.items():
            vw = f"{where}/{vkey}"
            if not isinstance(vg, h5py.Group):
                raise CacheError(f"{vw}: not a video group")
            vid = _attr_str(vg, "video_id", vw)
            feats, valid, ts = (_dataset(vg, k, vw) for k in ("feats", "valid", "timestamps"))
            for d in (feats, valid, ts):
                _numeric(d, f"{vw}/{d.name.rsplit('/', 1)[-1]}", "fiub")
            n = feats.shape[0] if feats.ndim == 2 else -1
            if feats.shape != (n, dim) or valid.shape != (n,) or ts.shape != (n,):
                raise CacheError(f"{vw}: feats {feats.shape}, valid {valid.shape}, timestamps {ts.shape}; expected "
                                 f"[n, {dim}], [n], [n]")
            fps = vg.attrs.get("fps")
            if not isinstance(fps, (int, float, np.number)) or not math.isfinite(float(fps)) or float(fps) < 0:
                raise CacheError(f"{vw}: fps {fps!r} is not a number >= 0")
            source = vg.attrs.get("source", str(src))
            plan.videos.append(_Video(vid, lambda feats=feats, valid=valid, ts=ts: (feats[:], valid[:], ts[:]),
                                      float(fps), source.decode() if isinstance(source, bytes) else str(source)))
        _check_names(sp, [v.video for v in plan.videos], src)
        sets.append(plan)
    specs = [s.spec for s in sets]
    if len(set(specs)) != len(specs):
        raise CacheError(f"{src}: feature set {next(s for s in specs if specs.count(s) > 1)!r} appears twice")
    texts = []
    tgroup = f.get("_text")
    for key, tg in (tgroup.items() if isinstance(tgroup, h5py.Group) else []):
        where = f"{src}: /_text/{key}"
        name, spec = _attr_str(tg, "name", where), _attr_str(tg, "spec", where)
        try:
            prompts = json.loads(_attr_str(tg, "prompts", where))
        except ValueError:
            raise CacheError(f"{where}: attribute 'prompts' is not JSON") from None
        emb = _dataset(tg, "emb", where)
        _numeric(emb, f"{where}/emb", "fiu")
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts) or emb.ndim != 2 \
                or emb.shape[0] != len(prompts):
            raise CacheError(f"{where}: {emb.shape} embeddings for {len(prompts) if isinstance(prompts, list) else '?'} "
                             f"prompts")
        for n, what in ((name, "prompt-set name"), (spec, "prompt-set spec")):
            if (p := name_problem(n, what)) is not None:
                raise CacheError(f"{where}: {p}")
        texts.append(_Text(name, spec, prompts, emb))
    return sets, texts


def _plan_foreign(f: h5py.File, src: Path, spec: str | None, fps: float, modality: str | None) -> list[_Set]:
    """Another tool's file: each top-level [n_frames, dim] dataset is a video of one feature set, checked whole."""
    if spec is None:
        raise CacheError(f"{src}: not an affcli export; pass --spec NAME to import its datasets as one feature set")
    if modality is None:
        raise CacheError(f"{src}: not an affcli export; pass --modality {'|'.join(MODALITIES)} "
                         f"to say what its features describe")
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise CacheError(f"{src}: --fps {fps!r} must be a number > 0")
    dsets = {k: d for k, d in f.items() if isinstance(d, h5py.Dataset)}
    if not dsets:
        raise CacheError(f"{src}: no top-level datasets to import")
    dims = {d.shape[1] if d.ndim == 2 else None for d in dsets.values()}
    if len(dims) != 1 or None in dims:
        raise CacheError(f"{src}: datasets must all be [n_frames, dim] with one dim; found dims {sorted(map(str, dims))}")
    for k, d in dsets.items():
        _numeric(d, f"{src}: /{k}", "fiu")
    dim = int(dims.pop())
    if dim <= 0:
        raise CacheError(f"{src}: datasets have no feature columns (dim 0)")
    _check_names(spec, list(dsets), src)
    plan = _Set(spec, make_fingerprint(spec, modality, dim, f"h5:{src.name}", {"imported_from": src.name}))

    def reader(d: h5py.Dataset) -> Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        def read() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            x = np.asarray(d[:], dtype=np.float32)
            ok = np.isfinite(x).all(axis=1)
            x[~ok] = 0.0
            return x, ok, np.arange(x.shape[0]) / fps
        return read

    plan.videos = [_Video(vid, reader(d), float(fps), str(src)) for vid, d in dsets.items()]
    return [plan]


def _check_against(store: FeatureStore, sets: list[_Set], src: Path) -> None:
    """What the cache already holds must take the plan: same fingerprint for an existing set, no group key owned by
    another set or video."""
    for s in sets:
        try:
            key = store.key_of(s.spec)
        except CacheError as e:
            raise CacheError(f"{src}: {e}") from None
        if s.spec in store.feature_sets():
            old = store.fingerprint(s.spec)
            diff = fingerprint_diff(old, s.fingerprint)
            if diff:
                raise CacheError(f"{src}: feature set {s.spec!r} in {store.path} has another fingerprint ({diff[0]}: "
                                 f"cached {old.get(diff[0])!r} vs file {s.fingerprint.get(diff[0])!r})")
            groups = {k: g.attrs.get("video_id") for k, g in store.root[key].groups()}
            for v in s.videos:
                other = groups.get(safe_key(v.video))
                if other is not None and other != v.video:
                    raise CacheError(f"{src}: video {v.video!r} would share group {safe_key(v.video)!r} with "
                                     f"{other!r} in {s.spec!r}")
        elif key in store.root:
            raise CacheError(f"{src}: feature set {s.spec!r} would take the group {key!r}, which the cache already "
                             f"holds")


def _write(store: FeatureStore, sets: list[_Set], texts: list[_Text]) -> dict[str, int]:
    """Write the checked plan; if a write fails, remove the videos (and new sets) this import wrote, then re-raise."""
    counts: dict[str, int] = {}
    created: list[str] = []
    written: list[tuple[str, str]] = []
    try:
        for s in sets:
            if s.spec not in store.feature_sets():
                created.append(s.spec)
            store.ensure_feature_set(s.spec, s.fingerprint)
            counts[s.spec] = 0
            for v in s.videos:
                if store.has_video(s.spec, v.video):
                    continue
                feats, valid, ts = v.read()
                store.write_video(s.spec, v.video, feats, valid, ts, v.fps, v.source)
                written.append((s.spec, v.video))
                counts[s.spec] += 1
        for t in texts:
            store.write_text_embeddings(t.name, t.spec, t.prompts, t.emb[:])
    except BaseException:
        _undo(store, created, written)
        raise
    store.write_manifest()
    return counts


def _undo(store: FeatureStore, created: list[str], written: list[tuple[str, str]]) -> None:
    """Remove what a failed import wrote (best effort: the original error is what the caller reports)."""
    try:
        for spec in created:
            if spec in store.feature_sets():
                store.remove_feature_set(spec)
        for spec, vid in written:
            if spec not in created and spec in store.feature_sets():
                grp = store.root[store.key_of(spec)]
                if safe_key(vid) in grp:
                    del grp[safe_key(vid)]
    except Exception:
        pass


def import_h5(src: str | Path, cache: str | Path, spec: str | None = None, fps: float = 30.0,
              modality: str | None = None) -> dict[str, int]:
    """Import an HDF5 file into a cache; returns {spec: videos imported}. Complete videos are kept.

    Our own export layout is recognised by its attributes (`modality` then only fills in fingerprints of
    older exports that lack one). Any other file is read as one feature set (name it with `spec`, give its
    `modality`): each top-level dataset of shape [n_frames, dim] is a video, all frames valid, timestamps i / fps.
    The whole file is checked before anything is written (nothing is created in the cache for a refused file).
    """
    src = Path(src)
    if not src.is_file():
        raise CacheError(f"{src}: no such file")
    if modality is not None:
        try:
            check_modality(modality, f"{src}: --modality")
        except ValueError as e:
            raise CacheError(str(e)) from None
    try:
        f = h5py.File(src, "r")
    except OSError as e:
        raise CacheError(f"{src}: not an HDF5 file ({' '.join(str(e).split())})") from None
    with f:
        try:
            if "affcli_h5_version" in f.attrs:
                sets, texts = _plan_export(f, src, modality)
            else:
                sets, texts = _plan_foreign(f, src, spec, fps, modality), []
        except (OSError, KeyError, ValueError, TypeError) as e:  # metadata h5py cannot decode
            raise CacheError(f"{src}: unreadable HDF5 structure ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]})") from None
        store = FeatureStore(cache, mode="a")
        _check_against(store, sets, src)
        try:
            return _write(store, sets, texts)
        except (OSError, KeyError, ValueError, TypeError) as e:  # data h5py cannot decode (the import was undone)
            raise CacheError(f"{src}: unreadable data ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                             f"nothing was imported") from None
