"""Integrity checks of a feature cache, and the summaries behind `affcli cache ls|info`."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from affcli.cache.checked import describe_error, shape_problem
from affcli.cache.fingerprint import missing_modality
from affcli.cache.store import FeatureStore, array_sha256


WeightsHash = Callable[[str, int], "str | None"]
"""(spec, seed) -> the sha256 of the spec's weights rebuilt offline, None when they are not at hand (the backbone
stage gives one: affcli.pipeline.weights_check.offline_weights_sha256)."""


def verify(path: str | Path, deep: bool = True, weights: WeightsHash | None = None, seed: int = 0) -> list[str]:
    """Problems found in the cache (empty list = sound). `deep` re-reads every array, checks its hash and re-derives
    the fingerprint's dim and dtype from the data; `weights` (a WeightsHash) also compares each feature set's
    fingerprint with the hash of its backbone rebuilt offline (random-weight specs with `seed`)."""
    store = FeatureStore(path, mode="r")
    problems: list[str] = []
    for spec in store.feature_sets():
        fp = store.fingerprint(spec)
        for k in ("spec", "weights_sha256", "dim", "preprocessing"):
            if k not in fp:
                problems.append(f"{spec}: fingerprint lacks {k!r}")
        if "modality" not in fp:
            problems.append(missing_modality(store.path, spec))
        if weights is not None and (p := weights_problem(spec, fp, weights, seed)) is not None:
            problems.append(p)
        for key in store.incomplete(spec):
            problems.append(f"{spec}/{key}: incomplete video (interrupted write); re-run extract to finish it")
        if not deep:
            continue
        for vid in store.videos(spec):
            problems += _video_problems(store, spec, vid, fp)
    for name, spec in store.text_sets():
        prompts, emb, _ = store.read_text_embeddings(name, spec)
        if emb.shape[0] != len(prompts) or not np.isfinite(emb).all():
            problems.append(f"text {name}@{spec}: {emb.shape[0]} embeddings for {len(prompts)} prompts or non-finite values")
    return problems


def _video_problems(store: FeatureStore, spec: str, vid: str, fp: dict[str, Any]) -> list[str]:
    """Everything wrong with one video: unreadable, shapes/dtype against n_frames and the fingerprint, values, hash."""
    where = f"{spec}/{vid}"
    try:
        rec = store.read_video(spec, vid, faces=True)
    except Exception as e:
        return [f"{where}: unreadable ({describe_error(e)})"]
    shape = shape_problem(rec, fp)
    if shape is not None:
        return [f"{where}: {shape}"]
    out = []
    if not np.isfinite(rec.feats).all():
        out.append(f"{where}: NaN or inf in features")
    if rec.timestamps.size and np.any(np.diff(rec.timestamps) <= 0):
        out.append(f"{where}: timestamps not strictly increasing")
    if np.any(rec.feats[~rec.valid] != 0):
        out.append(f"{where}: invalid frames carry non-zero features")
    if rec.attrs.get("sha256") != array_sha256(rec.feats, rec.valid, rec.timestamps, rec.faces):
        out.append(f"{where}: checksum mismatch (data changed after writing)")
    return out


def weights_problem(spec: str, fp: dict[str, Any], weights: WeightsHash, seed: int = 0) -> str | None:
    """A mismatch between the fingerprint's weights hash and the backbone's weights rebuilt offline by `weights`;
    None when they match or the weights are not at hand."""
    try:
        sha = weights(spec, seed)
    except Exception as e:  # a spec of another version of affcli, a moved checkpoint
        return f"{spec}: weights could not be rebuilt to check the fingerprint ({describe_error(e)})"
    if sha is None or sha == fp.get("weights_sha256"):
        return None
    return (f"{spec}: fingerprint weights_sha256 {str(fp.get('weights_sha256'))[:12]}... is not the hash of the "
            f"weights ({sha[:12]}... with seed {seed}); the fingerprint was edited or another --seed made the set")


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
