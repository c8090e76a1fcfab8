"""Integrity checks of a feature cache, and the summaries behind `affcli cache ls|info`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from affcli.cache.checked import describe_error, shape_problem
from affcli.cache.fingerprint import missing_modality
from affcli.cache.store import FeatureStore, array_sha256


def verify(path: str | Path, deep: bool = True, weights: bool = False, seed: int = 0) -> list[str]:
    """Problems found in the cache (empty list = sound). `deep` re-reads every array, checks its hash and re-derives
    the fingerprint's dim and dtype from the data; `weights` also rebuilds each backbone whose weights are at hand
    offline (tiny and /random specs with `seed`, local checkpoints) and compares its weights hash."""
    store = FeatureStore(path, mode="r")
    problems: list[str] = []
    for spec in store.feature_sets():
        fp = store.fingerprint(spec)
        for k in ("spec", "weights_sha256", "dim", "preprocessing"):
            if k not in fp:
                problems.append(f"{spec}: fingerprint lacks {k!r}")
        if "modality" not in fp:
            problems.append(missing_modality(store.path, spec))
        if weights and (p := weights_problem(spec, fp, seed)) is not None:
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


def weights_problem(spec: str, fp: dict[str, Any], seed: int = 0) -> str | None:
    """A mismatch between the fingerprint's weights hash and the backbone rebuilt offline, if it can be rebuilt
    (tiny, <model>/random, a local checkpoint); None when it matches or the weights are not at hand."""
    if not weights_at_hand(spec):
        return None
    from affcli.pipeline.backbones import build_backbone
    from affcli.pipeline.backbones.base import state_dict_sha256

    try:
        sha = state_dict_sha256(build_backbone(spec, "cpu", seed=seed).module)
    except Exception as e:  # a spec of another version of affcli, a moved checkpoint
        return f"{spec}: weights could not be rebuilt to check the fingerprint ({describe_error(e)})"
    if sha != fp.get("weights_sha256"):
        return (f"{spec}: fingerprint weights_sha256 {str(fp.get('weights_sha256'))[:12]}... is not the hash of the "
                f"weights ({sha[:12]}... with seed {seed}); the fingerprint was edited or another --seed made the set")
    return None


def weights_at_hand(spec: str) -> bool:
    """True for specs whose weights need no download: tiny, <model>/random, or an existing local file or folder."""
    _, _, name = spec.partition(":")
    return name == "tiny" or name.endswith("/random") or (name.startswith(("/", ".", "~")) and Path(name).expanduser().exists())


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
