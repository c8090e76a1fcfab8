"""HDF5 interchange (h5py): export a cache's feature sets, import ours or other teams' per-video arrays."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from affcli.cache.checked import read_checked
from affcli.cache.errors import CacheError
from affcli.cache.fingerprint import MODALITIES, check_modality, make_fingerprint
from affcli.cache.store import FeatureStore, safe_key


def export_h5(cache: str | Path, out: str | Path, specs: list[str] | None = None) -> Path:
    """Write `/<set>/<video>/{feats,valid,timestamps}` with the spec, fingerprint and video attributes."""
    store = FeatureStore(cache, mode="r")
    specs = specs or store.feature_sets()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["affcli_h5_version"] = 1
        for spec in specs:
            g = f.create_group(safe_key(spec))
            g.attrs["spec"] = spec
            g.attrs["fingerprint"] = json.dumps(store.fingerprint(spec), sort_keys=True)
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
    tmp.replace(out)
    return out


def import_h5(src: str | Path, cache: str | Path, spec: str | None = None, fps: float = 30.0,
              modality: str | None = None) -> dict[str, int]:
    """Import an HDF5 file into a cache; returns {spec: videos imported}. Complete videos are kept.

    Our own export layout is recognised by its attributes (`modality` then only fills in fingerprints of
    older exports that lack one). Any other file is read as one feature set (name it with `spec`, give its
    `modality`): each top-level dataset of shape [n_frames, dim] is a video, all frames valid, timestamps i / fps.
    """
    src = Path(src)
    if not src.exists():
        raise CacheError(f"{src}: no such file")
    if modality is not None:
        try:
            check_modality(modality, f"{src}: --modality")
        except ValueError as e:
            raise CacheError(str(e)) from None
    store = FeatureStore(cache, mode="a")
    counts: dict[str, int] = {}
    try:
        f = h5py.File(src, "r")
    except OSError as e:
        raise CacheError(f"{src}: not an HDF5 file ({e})") from None
    with f:
        if "affcli_h5_version" in f.attrs:
            for key, g in f.items():
                if key == "_text":
                    continue
                sp = str(g.attrs["spec"])
                fp = json.loads(g.attrs["fingerprint"])
                if fp.get("modality") is None:
                    if modality is None:
                        raise CacheError(f"{src}: feature set {sp!r} was exported without a modality; "
                                         f"pass --modality {'|'.join(MODALITIES)}")
                    fp["modality"] = modality
                store.ensure_feature_set(sp, fp)
                counts[sp] = 0
                for _, vg in g.items():
                    vid = str(vg.attrs["video_id"])
                    if store.has_video(sp, vid):
                        continue
                    store.write_video(sp, vid, vg["feats"][:], vg["valid"][:], vg["timestamps"][:],
                                      float(vg.attrs["fps"]), str(vg.attrs.get("source", src)))
                    counts[sp] += 1
            for _, tg in f.get("_text", {}).items():
                store.write_text_embeddings(str(tg.attrs["name"]), str(tg.attrs["spec"]),
                                            json.loads(tg.attrs["prompts"]), tg["emb"][:])
            return counts
        if spec is None:
            raise CacheError(f"{src}: not an affcli export; pass --spec NAME to import its datasets as one feature set")
        if modality is None:
            raise CacheError(f"{src}: not an affcli export; pass --modality {'|'.join(MODALITIES)} "
                             f"to say what its features describe")
        dsets = {k: d for k, d in f.items() if isinstance(d, h5py.Dataset)}
        if not dsets:
            raise CacheError(f"{src}: no top-level datasets to import")
        dims = {d.shape[1] if d.ndim == 2 else None for d in dsets.values()}
        if len(dims) != 1 or None in dims:
            raise CacheError(f"{src}: datasets must all be [n_frames, dim] with one dim; found dims {sorted(map(str, dims))}")
        dim = dims.pop()
        store.ensure_feature_set(spec, make_fingerprint(spec, modality, int(dim), f"h5:{src.name}",
                                                        {"imported_from": src.name}))
        counts[spec] = 0
        for vid, d in dsets.items():
            if store.has_video(spec, vid):
                continue
            x = np.asarray(d[:], dtype=np.float32)
            ok = np.isfinite(x).all(axis=1)
            x[~ok] = 0.0
            store.write_video(spec, vid, x, ok, np.arange(x.shape[0]) / fps, fps, str(src))
            counts[spec] += 1
    return counts
