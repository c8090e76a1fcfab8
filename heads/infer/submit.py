"""`affcli submit`: a test-set package for the organisers' form, checked before it is zipped.

Predictions for exactly the listed test videos, every cached frame of each (frames without a face get the run's
own post-processing, as `predict` gives them: its interpolation where it has one, else the head's prediction from
context; none is dropped), in the edition's header and file layout. Before zipping, the staged files are read back
with `affcli score`'s reader (headers, class ids, 0/1 labels) and checked against the list (no video missing, none
extra), the cached frame counts (every frame exactly once) and the value ranges; any problem refuses the package in
one line. The zip is written beside --out and renamed into place; an existing non-file there is never touched.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from affcli.common.names import safe_name
from affcli.common.vocab import subject_video
from affcli.heads.errors import LabelError
from affcli.heads.tasks import Task, get_task

PER_VIDEO, SINGLE_FILE = "per-video", "single-file"
EDITIONS: dict[str, str] = {"abaw3": PER_VIDEO, **{f"abaw{i}": SINGLE_FILE for i in range(4, 11)}}
"""Submission style of each ABAW edition: ABAW3 one txt per test id in the task's challenge folder; ABAW4 and later
one file per task (`image_location,<columns>` rows `video/00001.jpg,...`; MTL `image,...`)."""
ABAW3_FOLDERS = {"expr": "EXPR_Classification_Challenge", "va": "VA_Estimation_Challenge",
                 "au": "AU_Detection_Challenge"}


class SubmitError(ValueError):
    """A test list or package refused: one line naming the file and what is wrong or missing."""


@dataclass(frozen=True)
class Layout:
    """Where a task's files go inside the package: `folder` ('' = the zip root) and the writing style."""

    style: str
    folder: str = ""


def layout(task: str | Task, edition: str) -> Layout:
    """The package layout of a task in an edition (one-line SubmitError for unknown editions and tasks that are not
    per-frame video tasks)."""
    t = get_task(task) if isinstance(task, str) else task
    if edition not in EDITIONS:
        raise SubmitError(f"unknown edition {edition!r}; valid: {', '.join(EDITIONS)}")
    if not t.submission.per_frame:
        raise SubmitError(f"task {t.name}: predictions are one row per image, not per video frame; submit packages "
                          f"video tasks ({', '.join(n for n in ('expr', 'va', 'au', 'mtl'))})")
    style = EDITIONS[edition]
    if style == PER_VIDEO and t.name in ABAW3_FOLDERS:
        return Layout(PER_VIDEO, ABAW3_FOLDERS[t.name])
    return Layout(SINGLE_FILE)


def read_test_list(path: str | Path) -> list[str]:
    """The test ids of a list file, one per line (blank lines and `#` comments skipped), in file order. Refused in
    one line: a missing, binary or empty file, an id that is not one plain name (`../x`, separators, control
    characters), an id holding spaces or commas, and an id listed twice."""
    path = Path(path)
    if not path.is_file():
        raise SubmitError(f"test list {path}: not a file")
    raw = path.read_bytes()
    if b"\0" in raw:
        raise SubmitError(f"test list {path}: binary bytes, not a text list of video ids")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SubmitError(f"test list {path}: not UTF-8 text") from None
    ids: list[str] = []
    seen: dict[str, int] = {}
    for i, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        if any(c in item for c in ", \t;"):
            raise SubmitError(f"test list {path}: line {i}: {item!r} is not one video id (one id per line)")
        try:
            safe_name(item, "video id")
        except ValueError as e:
            raise SubmitError(f"test list {path}: line {i}: {e}") from None
        if item in seen:
            raise SubmitError(f"test list {path}: line {i}: video {item!r} is listed twice (first on line {seen[item]})")
        seen[item] = i
        ids.append(item)
    if not ids:
        raise SubmitError(f"test list {path}: no video ids")
    return ids


def cached_ids(ids: list[str], cache: str, features: list[str], list_path: str | Path) -> tuple[dict[str, str], dict[str, int]]:
    """({test id: cache video}, {cache video: cached frames}): a test id's features are the cache video of the same
    id, else of its video without `_left`/`_right`. Ids the cache lacks are refused in one line, all counted."""
    from affcli.cache.loader import common_videos
    from affcli.cache.store import FeatureStore

    store = FeatureStore(cache, mode="r")
    have = set(common_videos(store, list(features)))
    mapped = {v: v if v in have else subject_video(v) for v in ids}
    lost = [v for v, c in mapped.items() if c not in have]
    if lost:
        raise SubmitError(f"test list {list_path}: {len(lost)} of {len(ids)} video(s) are not complete in the cache "
                          f"{cache} ({', '.join(features)}): {', '.join(repr(v) for v in lost[:5])}"
                          + (" ..." if len(lost) > 5 else ""))
    frames = {c: int(store.video_attrs(features[0], c).get("n_frames", 0)) for c in set(mapped.values())}
    return mapped, frames


def check_package(folder: str | Path, task: str | Task, lay: Layout, expected: dict[str, int]) -> dict[str, Any]:
    """Read a staged package back with `affcli score`'s reader and check it: exactly the listed ids, every frame
    0..n-1 of each exactly once (n = its cached frames), values in range; a one-line SubmitError names what is wrong
    or missing. Returns counts."""
    from affcli.heads.data.abaw_io import read_prediction_table, single_file_name

    t = get_task(task) if isinstance(task, str) else task
    folder = Path(folder)
    where = folder / lay.folder if lay.folder else folder
    if lay.style == SINGLE_FILE:
        where = where / single_file_name(t)
    else:
        extra_files = sorted(p.name for p in where.iterdir() if p.is_file() and p.suffix != ".txt")
        if extra_files:
            raise SubmitError(f"package {where}: {extra_files[0]} is not a prediction file")
    try:
        table = read_prediction_table(where, t)
    except LabelError as e:
        raise SubmitError(f"package: {e}") from None
    got = table.group_by("video", maintain_order=True).agg(n=pl.len(), lo=pl.col("frame").min(),
                                                          hi=pl.col("frame").max(), uniq=pl.col("frame").n_unique())
    have = dict(zip(got["video"].to_list(), got.iter_rows(named=True)))
    missing = [v for v in expected if v not in have]
    if missing:
        raise SubmitError(f"package {where}: no predictions for {len(missing)} of {len(expected)} listed video(s) "
                          f"(e.g. {missing[0]!r})")
    extra = [v for v in have if v not in expected]
    if extra:
        raise SubmitError(f"package {where}: {len(extra)} video(s) not in the test list (e.g. {extra[0]!r})")
    for v, n in expected.items():
        r = have[v]
        if r["uniq"] != r["n"]:
            raise SubmitError(f"package {where}: video {v!r} lists a frame twice ({r['n']} rows, {r['uniq']} frames)")
        if r["n"] != n or r["lo"] != 0 or r["hi"] != n - 1:
            frames = set(table.filter(pl.col("video") == v)["frame"].to_list())
            gap = next((f for f in range(n) if f not in frames), None)
            what = f"frame {gap + 1:05d} missing" if gap is not None else f"frames past {n:05d}"
            raise SubmitError(f"package {where}: video {v!r} has {r['n']} rows, the cache has {n} frames ({what})")
    for o in t.outputs:
        if o.kind == "reg":
            vals = table.select(o.columns).to_numpy()
            bad = ~np.isfinite(vals) | (vals < -1) | (vals > 1)
            if bad.any():
                i = int(np.argwhere(bad)[0][0])
                raise SubmitError(f"package {where}: {o.key} value {vals[i].tolist()} of video "
                                  f"{table['video'][i]!r} outside [-1, 1]")
    return {"videos": len(expected), "frames": int(sum(expected.values()))}


def _members(folder: Path) -> list[tuple[Path, str]]:
    """(file, zip entry name) of every file under `folder`, each name's components checked plain (never absolute,
    never `..`)."""
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            parts = p.relative_to(folder).parts
            out.append((p, "/".join(safe_name(c, "zip entry name") for c in parts)))
    return out


def write_zip(folder: Path, out: Path) -> Path:
    """Zip `folder`'s files into `out` atomically (a temp file beside it, then rename); an existing non-file at
    `out` (a folder, a link, a device) is refused and left as it is."""
    if os.path.lexists(out) and (out.is_symlink() or not out.is_file()):
        raise SubmitError(f"--out {out}: exists and is not a regular file; refusing to write over it")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for path, name in _members(folder):
                z.write(path, name)
        with zipfile.ZipFile(tmp) as z:
            if z.testzip() is not None:
                raise SubmitError(f"--out {out}: the written zip does not read back")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def submit(run: str | Path, test_list: str | Path, task: str, edition: str, out: str | Path,
           cache: str | None = None, device: str | None = None) -> dict[str, Any]:
    """Predict the listed test videos with a run of any kind, stage the edition's files, check them, zip them to
    `out`; returns what was packaged."""
    from affcli.heads.infer.predict import write_run_predictions
    from affcli.heads.infer.runs import open_run

    out = Path(out)
    if os.path.lexists(out) and (out.is_symlink() or not out.is_file()):
        raise SubmitError(f"--out {out}: exists and is not a regular file; refusing to write over it")
    t = get_task(task)
    lay = layout(t, edition)
    ids = read_test_list(test_list)
    view = open_run(run, cache, device=device)
    if view.cfg.task != t.name:
        raise SubmitError(f"run {run} predicts {view.cfg.task}, not {t.name}")
    view.cfg.check_paths(labels=False)
    mapped, frames = cached_ids(ids, view.cfg.cache, view.cfg.features, test_list)
    stage = Path(tempfile.mkdtemp(prefix=".submit-", dir=out.parent if out.parent.is_dir() else None))
    try:
        target = stage / "package" / lay.folder if lay.folder else stage / "package"
        write_run_predictions(view, mapped, target, lay.style)
        (target / f"predictions_{t.name}.parquet").unlink(missing_ok=True)
        counts = check_package(stage / "package", t, lay, {v: frames[c] for v, c in mapped.items()})
        write_zip(stage / "package", out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {**counts, "out": str(out), "edition": edition, "style": lay.style, "folder": lay.folder,
            "interpolate": view.cfg.interpolate if view.kind == "single" else "each member's own"}
