"""Integrity checks of a feature cache, and the summaries behind `affcli cache ls|info`."""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from affcli.cache.checked import describe_error, shape_problem
from affcli.cache.crc import ATTR as CRC_ATTR
from affcli.cache.errors import CacheError
from affcli.cache.fingerprint import missing_modality
from affcli.cache.store import MANIFEST_FILE, FeatureStore, array_sha256


WeightsHash = Callable[[str, int], "str | None"]
"""(spec, seed) -> the sha256 of the spec's weights rebuilt offline, None when they are not at hand (the backbone
stage gives one: affcli.pipeline.weights_check.offline_weights_sha256)."""


def verify(path: str | Path, deep: bool = True, weights: WeightsHash | None = None, seed: int = 0,
           notes: list[str] | None = None) -> list[str]:
    """Problems found in the cache (empty list = sound). `deep` re-reads every array, checks its hash and re-derives
    the fingerprint's dim and dtype from the data; `weights` (a WeightsHash) also compares each feature set's
    fingerprint with the hash of its backbone rebuilt offline (random-weight specs with `seed`). Also checked: the
    prompt sets (checksum, shapes), every teacher's targets (checksums) and manifest.parquet (readable and equal to
    what the groups say). `notes` collects what is sound but unchecked (prompt sets written before checksums)."""
    store = FeatureStore(path, mode="r")
    problems: list[str] = []
    for spec in store.feature_sets():
        try:
            fp = store.fingerprint(spec)
        except Exception as e:  # a damaged set group
            problems.append(f"{spec}: feature-set metadata unreadable ({describe_error(e)})")
            continue
        for k in ("spec", "weights_sha256", "dim", "preprocessing"):
            if k not in fp:
                problems.append(f"{spec}: fingerprint lacks {k!r}")
        if "modality" not in fp:
            problems.append(missing_modality(store.path, spec))
        if weights is not None and (p := weights_problem(spec, fp, weights, seed)) is not None:
            problems.append(p)
        for key, problem in store.damaged(spec).items():
            problems.append(f"{spec}/{key}: {problem}; re-extract the video (or remove its group)")
        for key in store.incomplete(spec):
            problems.append(f"{spec}/{key}: incomplete video (interrupted write); re-run extract to finish it")
        if not deep:
            continue
        for vid in store.videos(spec):
            problems += _video_problems(store, spec, vid, fp)
    problems += _text_problems(store, notes if notes is not None else [])
    if deep:
        problems += _teacher_problems(store)
    problems += manifest_problems(store)
    return problems


def _text_problems(store: FeatureStore, notes: list[str]) -> list[str]:
    """Every prompt-set group: named, readable, shapes and checksum; a set without a checksum is a note."""
    groups, damaged = store._text_groups()
    out = [f"text {key}: {problem}; encode the prompts again" for key, problem in damaged.items()]
    for key, g in groups.items():
        name, spec = g.attrs.get("name"), g.attrs.get("spec")
        if not isinstance(name, str) or not isinstance(spec, str):
            out.append(f"text {key}: metadata lacks the prompt set's name or spec")
            continue
        if not g.attrs.get("complete", True):
            out.append(f"text {name}@{spec}: incomplete (interrupted write); encode the prompts again")
            continue
        try:
            _, _, attrs = store.read_text_embeddings(name, spec)
        except CacheError as e:
            out.append(f"text {name}@{spec}: {str(e).split(': ', 2)[-1]}")
            continue
        if "sha256" not in attrs:
            notes.append(f"text {name}@{spec}: written without a checksum (before affcli checked prompt sets); "
                         f"encoding the prompts again adds one")
    return out


def _teacher_problems(store: FeatureStore) -> list[str]:
    """Every complete video of every teacher's targets, read and checked against its checksum."""
    from affcli.cache.teacher import TeacherTargets

    from affcli.cache.teacher import teacher_groups

    groups, damaged = teacher_groups(store)
    out = [f"teacher/{key}: {problem}" for key, problem in damaged.items()]
    for key in groups:
        try:
            targets = TeacherTargets(store, key)
            vids = targets.videos()
            out += [f"teacher/{key}/{k}: {problem}" for k, problem in targets.damaged().items()]
        except Exception as e:
            out.append(f"teacher/{key}: unreadable ({describe_error(e)})")
            continue
        for v in vids:
            try:
                targets.read(v)
            except CacheError as e:
                out.append(f"teacher/{key}/{v}: {str(e).split(': ', 2)[-1]}")
    return out


def manifest_problems(store: FeatureStore) -> list[str]:
    """manifest.parquet unreadable, or not what the groups say (rows, status, frame counts, checksums); none when
    there is no manifest (loads then read every group's attributes)."""
    import polars as pl

    from affcli.cache.bulk import Objects

    raw = Objects(store).get([MANIFEST_FILE]).get(MANIFEST_FILE)
    if raw is None:
        return []
    where = f"{MANIFEST_FILE}"
    fix = f"rebuild it with `affcli cache verify {store.path} --rebuild-manifest`"
    try:
        if isinstance(raw, BaseException):
            raise raw
        have = pl.read_parquet(io.BytesIO(raw))
    except Exception as e:
        return [f"{where}: unreadable ({describe_error(e)}); {fix}"]
    want = store.manifest()
    cols = ["feature_set", "video", "status", "n_frames"]
    missing = [c for c in cols if c not in have.columns]
    if missing:
        return [f"{where}: lacks column {missing[0]!r} (damaged, or not an affcli manifest); {fix}"]
    cols += [CRC_ATTR] if CRC_ATTR in have.columns else []  # manifests before the CRC-32C lack it (loads skip them)
    rows = {}
    for name, table in (("have", have), ("want", want)):
        try:
            rows[name] = {(r[0], r[1]): r[2:] for r in table.select(cols).iter_rows()}
        except Exception as e:
            return [f"{where}: unreadable rows ({describe_error(e)}); {fix}"]
    if rows["have"] == rows["want"]:
        return []
    keys = sorted(set(rows["have"]) ^ set(rows["want"]), key=str) or sorted(
        (k for k in rows["want"] if rows["have"].get(k) != rows["want"][k]), key=str)
    return [f"{where}: out of date with the video groups (e.g. {'/'.join(map(str, keys[0]))}); {fix}"]


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
    crc = rec.attrs.get(CRC_ATTR)
    for name in (crc if isinstance(crc, dict) else {}):
        if name in CORE_AND_FACES:
            continue
        try:
            if store.read_extra(spec, vid, name) is None:
                out.append(f"{where}: {name} is missing (its checksum is recorded)")
        except CacheError as e:
            out.append(f"{where}: {str(e).split(': ', 3)[-1]}")
    return out


CORE_AND_FACES = ("feats", "valid", "timestamps", "faces/box", "faces/score", "faces/landmarks")


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
    prompts = []
    for n, s in store.text_sets():
        try:
            prompts.append({"name": n, "spec": s, "prompts": len(store.read_text_embeddings(n, s)[0])})
        except CacheError as e:
            prompts.append({"name": n, "spec": s, "prompts": f"? ({str(e).split(': ', 2)[-1]})"})
    return {"feature_sets": sets, "prompt_sets": prompts}
