"""Integrity checks of a feature cache, and the summaries behind `affcli cache ls|info`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from affcli.cache.fingerprint import missing_modality
from affcli.cache.store import FeatureStore, array_sha256


def verify(path: str | Path, deep: bool = True) -> list[str]:
    """Problems found in the cache (empty list = sound). `deep` re-reads every array and checks its hash."""
    store = FeatureStore(path, mode="r")
    problems: list[str] = []
    for spec in store.feature_sets():
        fp = store.fingerprint(spec)
        for k in ("spec", "weights_sha256", "dim", "preprocessing"):
            if k not in fp:
                problems.append(f"{spec}: fingerprint lacks {k!r}")
        if "modality" not in fp:
            problems.append(missing_modality(store.path, spec))
        dim = fp.get("dim")
        for key in store.incomplete(spec):
            problems.append(f"{spec}/{key}: incomplete video (interrupted write); re-run extract to finish it")
        for vid in store.videos(spec):
            a = store.video_attrs(spec, vid)
            where = f"{spec}/{vid}"
            if not deep:
                continue
            try:
                rec = store.read_video(spec, vid)
            except Exception as e:
                problems.append(f"{where}: unreadable ({type(e).__name__}: {e})")
                continue
            n = a.get("n_frames")
            if rec.feats.shape != (n, dim):
                problems.append(f"{where}: feats shape {rec.feats.shape}, expected ({n}, {dim})")
            if rec.valid.shape != (n,) or rec.timestamps.shape != (n,):
                problems.append(f"{where}: valid/timestamps length differs from n_frames {n}")
            if rec.feats.dtype != np.float16:
                problems.append(f"{where}: dtype {rec.feats.dtype}, expected float16")
            if not np.isfinite(rec.feats).all():
                problems.append(f"{where}: NaN or inf in features")
            if n and np.any(np.diff(rec.timestamps) <= 0):
                problems.append(f"{where}: timestamps not strictly increasing")
            if np.any(rec.feats[~rec.valid] != 0):
                problems.append(f"{where}: invalid frames carry non-zero features")
            if a.get("sha256") != array_sha256(rec.feats, rec.valid, rec.timestamps):
                problems.append(f"{where}: checksum mismatch (data changed after writing)")
    for name, spec in store.text_sets():
        prompts, emb, _ = store.read_text_embeddings(name, spec)
        if emb.shape[0] != len(prompts) or not np.isfinite(emb).all():
            problems.append(f"text {name}@{spec}: {emb.shape[0]} embeddings for {len(prompts)} prompts or non-finite values")
    return problems


def summary(path: str | Path) -> list[dict[str, Any]]:
    """One row per feature set: spec, modality, dim, videos ok / failed / incomplete, frames."""
    store = FeatureStore(path, mode="r")
    m = store.manifest()
    rows = []
    for spec in store.feature_sets():
        sub = m.filter(m["feature_set"] == spec)
        ok = sub.filter(sub["status"] == "ok")
        fp = store.fingerprint(spec)
        rows.append({"feature_set": spec, "modality": fp.get("modality") or "(unset)", "dim": fp.get("dim"),
                     "videos_ok": ok.height, "failed": int((sub["status"] == "failed").sum()),
                     "incomplete": int((sub["status"] == "incomplete").sum()),
                     "frames": int(ok["n_frames"].sum() or 0)})
    return rows


def info(path: str | Path, spec: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """What `affcli cache info` shows: per feature set (all, or `spec`) its fingerprint, complete videos,
    failures {video: error} and incomplete groups; and every prompt set with its prompt count."""
    store = FeatureStore(path, mode="r")
    sets = []
    for s in [spec] if spec else store.feature_sets():
        sets.append({"feature_set": s, "fingerprint": store.fingerprint(s), "videos_ok": len(store.videos(s)),
                     "failures": store.failures(s), "incomplete": len(store.incomplete(s))})
    prompts = [{"name": n, "spec": s, "prompts": len(store.read_text_embeddings(n, s)[0])} for n, s in store.text_sets()]
    return {"feature_sets": sets, "prompt_sets": prompts}
