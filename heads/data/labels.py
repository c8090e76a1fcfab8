"""Label files of any registered task (heads.tasks records: per-video txt, one annotation file per split, class
folders of images) -> polars tables keyed by (video, frame) -> dense arrays for the trainer.

Invalid markers (each output's `invalid`: EXPR -1, VA -5, AU -1) are kept in the table and exposed as boolean `mask_*`
columns (True = usable). A label root may be the ABAW folder, a challenge folder (a Train_Set / Validation_Set parent)
or a flat folder of per-video txt files, which is one split and answers for whichever split is asked.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from affcli.common.notices import warn
from affcli.common.vocab import SIDE_SUFFIX
from affcli.heads.errors import LabelError
from affcli.heads.tasks import TASKS, Output, Task, get_task

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
PL_DTYPES = {"class": pl.Int64, "reg": pl.Float32, "multilabel": pl.Int8}


def _record(task: str | Task, layout: str | None = None) -> Task:
    """The task record (by name or as given), refused when its labels are not stored in `layout`."""
    t = get_task(task) if isinstance(task, str) else task
    if layout is not None and t.labels.layout != layout:
        raise ValueError(f"task {t.name!r} stores its labels as {t.labels.layout}, not {layout}")
    return t


def _lines(path: Path) -> list[str]:
    """Lines of a text file without trailing blank lines."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise LabelError(path, "file not found") from None
    except UnicodeDecodeError:
        raise LabelError(path, "not a text file") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def split_cells(path: Path, rows: list[str], n_cols: int, first_line: int) -> pl.DataFrame:
    """Comma-separated rows -> string columns c0..c{n-1}; LabelError naming the first row with another column count."""
    s = pl.Series("row", rows, dtype=pl.String).str.strip_chars()
    counts = s.str.count_matches(",", literal=True).to_numpy() + 1
    bad = np.flatnonzero(counts != n_cols)
    if bad.size:
        i = int(bad[0])
        raise LabelError(path, f"line {first_line + i}: expected {n_cols} comma-separated values, got {counts[i]} "
                               f"({rows[i]!r})")
    return (s.str.split_exact(",", n_cols - 1).struct.rename_fields([f"c{j}" for j in range(n_cols)])
            .struct.unnest().select(pl.all().str.strip_chars()))


def numeric_cells(path: Path, cells: pl.DataFrame, first_line: int) -> np.ndarray:
    """String cells -> float64 [n, k]; LabelError naming the first line holding a non-number, NaN or inf."""
    if cells.height == 0:
        return np.zeros((0, cells.width), np.float64)
    arr = cells.select(pl.all().cast(pl.Float64, strict=False)).to_numpy().astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise LabelError(path, f"line {first_line + int(i)}: value {cells[int(i), int(j)]!r} is not a finite number")
    return arr


def check_values(path: Path, out: Output, arr: np.ndarray, first_line: int, n_classes: int | None = None) -> None:
    """Values of one output in range (class ids 0..n-1, 0/1 per label, values in [-1, 1]) or its invalid marker;
    LabelError naming the first bad line."""
    if arr.size == 0:
        return
    bad_marker = arr == out.invalid
    if out.kind == "reg":
        ok = ((arr >= -1.0) & (arr <= 1.0)) | bad_marker
        what = f"{out.key} values must lie in [-1, 1] or be {out.invalid:g} (invalid)"
    elif out.kind == "multilabel":
        ok = np.isin(arr, (0.0, 1.0)) | bad_marker
        what = f"{out.key} values must be 0, 1 or {out.invalid:g} (invalid)"
    else:
        n = n_classes or out.dim
        ok = ((arr == np.round(arr)) & (arr >= 0) & (arr < n)) | bad_marker
        what = f"{out.key} values must be integers 0..{n - 1} or {out.invalid:g} (invalid)"
    bad = ~ok.reshape(len(arr), -1).all(1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise LabelError(path, f"line {first_line + i}: {arr[i].tolist()} out of range: {what}")


def _norm(tokens: tuple[str, ...] | list[str]) -> list[str]:
    return [t.strip().lower() for t in tokens]


def read_label_file(path: Path, task: str | Task) -> np.ndarray:
    """One per-video label txt of a per-video task -> [n] int64 class ids, [n, k] float32 values or [n, k] int64 0/1.

    Row i after the header is frame i (0-based here, `{i+1:05d}.jpg`); invalid markers are kept as they are. A class
    output accepts any of the record's headers (EXPR: 8 classes, or 7 in ABAW1-2 files) and ids below its length.
    """
    t = _record(task, "per-video")
    out = t.outputs[0]
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise LabelError(path, f"empty file (expected the {t.name} header)")
    header = next((h for h in t.label_headers() if _norm(h) == _norm(lines[0].split(","))), None)
    if header is None:
        raise LabelError(path, f"line 1: header {lines[0].strip()!r} is not the {t.name} header "
                               f"{','.join(t.label_headers()[0])!r}")
    arr = numeric_cells(path, split_cells(path, lines[1:], len(out.columns), 2), 2)
    check_values(path, out, arr, 2, len(header) if out.kind == "class" else None)
    arr = arr.astype(out.dtype)
    return arr.reshape(-1) if out.kind == "class" else arr


def _find(root: Path, names: tuple[str, ...], want_dir: bool = True) -> Path | None:
    """root/<name> or root/*/<name> for the first name that exists."""
    for name in names:
        for cand in [root / name, *sorted(root.glob(f"*/{name}"))]:
            if (cand.is_dir() if want_dir else cand.is_file()):
                return cand
    return None


def _first_dir(parent: Path, names: tuple[str, ...]) -> Path | None:
    return next((parent / n for n in names if (parent / n).is_dir()), None)


def find_task_dirs(labels_root: Path, task: str | Task) -> dict[str, Path]:
    """{"train": .../Train_Set, "val": .../Validation_Set} of a per-video task. The root may hold a challenge folder
    under any ABAW edition's name, be a Train_Set/Validation_Set parent, or be a flat folder of per-video txt files
    (one split: it answers for every split)."""
    t = _record(task, "per-video")
    root = Path(labels_root)
    if not root.is_dir():
        raise LabelError(root, "label root is not a folder")
    splits = t.labels.splits
    has_split = any(_first_dir(root, names) for names in splits.values())
    task_dir = root if has_split else _find(root, t.labels.folders)
    if task_dir is None:
        if any(root.glob("*.txt")):
            return {split: root for split in splits}
        raise LabelError(root, f"no {t.name} annotations: expected a challenge folder ({', '.join(t.labels.folders)}), "
                               f"a Train_Set/Validation_Set parent or a flat folder of per-video .txt files")
    out = {split: d for split, names in splits.items() if (d := _first_dir(task_dir, names)) is not None}
    if not out:
        raise LabelError(task_dir, "holds neither Train_Set nor Validation_Set")
    return out


def label_files(labels_root: Path, task: str | Task, split: str) -> dict[str, Path]:
    """{video id: label txt} of one split of a per-video task."""
    t = _record(task, "per-video")
    dirs = find_task_dirs(labels_root, t)
    if split not in dirs:
        raise LabelError(labels_root, f"no {split} split for {t.name} (found: {', '.join(dirs)})")
    files = {p.stem: p for p in sorted(dirs[split].glob("*.txt"))}
    if not files:
        raise LabelError(dirs[split], "no .txt label files")
    return files


def without_empty(files: dict[str, Path], arrays: dict[str, np.ndarray], t: Task, split: str) -> dict[str, np.ndarray]:
    """The split's label arrays minus header-only files, each left out with a warning line naming the file and its
    video (never silently); LabelError when every file is header-only (nothing to train or score on)."""
    empty = [v for v, a in arrays.items() if len(a) == 0]
    if empty and len(empty) == len(arrays):
        raise LabelError(files[empty[0]].parent, f"every {split} label file holds only the {t.name} header "
                                                 f"(no label rows), e.g. {files[empty[0]].name}")
    for i, v in enumerate(empty):
        warn(f"{files[v]}: header only, no label rows: video {v!r} left out of the {split} split "
             f"({i + 1} of {len(empty)} such files, {len(arrays)} in the split)")
    return {v: a for v, a in arrays.items() if len(a)}


def _with_masks(df: pl.DataFrame, t: Task) -> pl.DataFrame:
    return df.with_columns(**{f"mask_{o.key}": pl.all_horizontal([pl.col(c) != o.invalid for c in o.columns])
                              for o in t.outputs})


def _key_frame(out: Output, arr: np.ndarray) -> dict[str, pl.Series]:
    a = arr.reshape(-1, len(out.columns))
    return {c: pl.Series(c, a[:, i], PL_DTYPES[out.kind]) for i, c in enumerate(out.columns)}


def _feature_video(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(feature_video=pl.col("video").str.replace(SIDE_SUFFIX, ""))


def _per_video_table(labels_root: Path, t: Task, split: str) -> pl.DataFrame:
    files = label_files(labels_root, t, split)
    arrays = without_empty(files, {v: read_label_file(p, t) for v, p in files.items()}, t, split)
    files = {v: files[v] for v in arrays}
    arrays = list(arrays.values())
    lens = np.array([len(a) for a in arrays], np.int64)
    which = np.repeat(np.arange(len(files)), lens)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    data = np.concatenate(arrays) if arrays else np.zeros(0, t.outputs[0].dtype)
    return pl.DataFrame({"video": pl.Series(list(files), dtype=pl.String).gather(which),
                         "frame": np.arange(len(which), dtype=np.int64) - starts[which],
                         **_key_frame(t.outputs[0], data),
                         "source": pl.Series([str(p) for p in files.values()], dtype=pl.String).gather(which)})


def find_annotation_file(labels_root: Path, task: str | Task, split: str) -> Path:
    """The annotation file of a split of a one-file-per-split task (MTL: ABAW3 MTL_Challenge/train_set.txt, ABAW4/7
    *_set_annotations.txt); labels_root may be the file itself."""
    t = _record(task, "annotation-file")
    root = Path(labels_root)
    if root.is_file():
        return root
    names = t.labels.splits[split]
    found = _find(root, names, want_dir=False) if root.is_dir() else None
    if found is None:
        raise LabelError(root, f"no {t.name.upper()} {split} annotations: expected one of {', '.join(names)}")
    return found


def image_frame_ids(path: Path, img: pl.Series, first_line: int) -> pl.DataFrame:
    """`video/NNNNN.jpg` cells -> (video, 0-based frame); LabelError naming the line of the first bad cell."""
    ids = pl.DataFrame({"video": img.str.extract(r"^(.*)/[^/]+$", 1),
                        "frame": img.str.extract(r"(\d+)\.\w+$", 1).cast(pl.Int64, strict=False) - 1})
    bad = ids.select(pl.any_horizontal(pl.all().is_null()) | (pl.col("frame") < 0)).to_series().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise LabelError(path, f"line {first_line + i}: image {img[i]!r} is not <video>/<NNNNN>.jpg")
    return ids


def read_annotation_file(path: Path, task: str | Task) -> pl.DataFrame:
    """Rows `video/NNNNN.jpg,<every output's columns>` (s-Aff-Wild2: valence,arousal,expression,AU1..AU26) -> table
    (frame 0-based, sparse); an optional header row is skipped."""
    t = _record(task, "annotation-file")
    path = Path(path)
    lines = _lines(path)
    first = 1 if lines and ".jpg" not in lines[0].split(",")[0].lower() else 0
    cells = split_cells(path, lines[first:], 1 + len(t.columns), first + 1)
    parts = image_frame_ids(path, cells["c0"], first + 1)
    arr = numeric_cells(path, cells.drop("c0"), first + 1)
    cols: dict[str, pl.Series] = {}
    j = 0
    for o in t.outputs:
        a = arr[:, j:j + len(o.columns)]
        j += len(o.columns)
        check_values(path, o, a, first + 1)
        cols.update(_key_frame(o, a.astype(o.dtype)))
    return parts.with_columns(**cols, source=pl.lit(str(path)))


def read_class_folders(folder: Path, task: str | Task) -> pl.DataFrame:
    """Class folders of images (LSD: ANGRER ... SURPRISE) -> (video = image stem, or class/stem when stems repeat,
    frame 0, class id)."""
    t = _record(task, "class-folders")
    out = t.outputs[0]
    folder = Path(folder)
    lookup = {n.upper(): i for i, n in enumerate(out.names)}
    lookup |= {a.upper(): lookup[n.upper()] for a, n in t.labels.aliases.items()}
    paths, classes = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name.upper() not in lookup:
            raise LabelError(sub, f"unknown {t.name.upper()} class folder; valid: {', '.join(out.names)}")
        imgs = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += imgs
        classes += [lookup[sub.name.upper()]] * len(imgs)
    if not paths:
        raise LabelError(folder, f"no images in class folders {', '.join(out.names)}")
    stems = [p.stem for p in paths]
    if len(set(stems)) < len(stems):
        stems = [f"{p.parent.name}/{p.stem}" for p in paths]
    return pl.DataFrame({"video": stems, "frame": np.zeros(len(paths), np.int64),
                         **_key_frame(out, np.asarray(classes, np.int64)), "source": [str(p) for p in paths]})


def _annotation_table(labels_root: Path, t: Task, split: str) -> pl.DataFrame:
    return read_annotation_file(find_annotation_file(labels_root, t, split), t)


def _class_folder_table(labels_root: Path, t: Task, split: str) -> pl.DataFrame:
    """The split's folder of class folders; the root itself when it holds class folders (one split)."""
    root = Path(labels_root)
    if not root.is_dir():
        raise LabelError(root, "label root is not a folder")
    folder = _find(root, t.labels.splits[split])
    names = {n.upper() for n in (*t.outputs[0].names, *t.labels.aliases)}
    if folder is None and any(p.is_dir() and p.name.upper() in names for p in root.iterdir()):
        folder = root
    if folder is None:
        raise LabelError(root, f"no {t.name.upper()} {split} folder: expected {t.labels.splits[split][0]}/<CLASS>/ "
                               f"or class folders here")
    return read_class_folders(folder, t)


READERS: dict[str, Callable[[Path, Task, str], pl.DataFrame]] = {
    "per-video": _per_video_table, "annotation-file": _annotation_table, "class-folders": _class_folder_table}


def load_labels(labels_root: Path, task: str | Task, split: str) -> pl.DataFrame:
    """Long table (video, feature_video, frame 0-based, the task's columns, mask_* columns, source file) of a split."""
    t = _record(task)
    if split not in t.labels.splits:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(t.labels.splits)}")
    df = READERS[t.labels.layout](Path(labels_root), t, split)
    cols = ["video", "feature_video", "frame", *t.columns, *[f"mask_{k}" for k in t.keys], "source"]
    out = _with_masks(_feature_video(df), t).with_columns(pl.col("source").cast(pl.Categorical))
    return out.select(cols)


def check_disjoint_splits(labels_root: Path, tables: dict[str, pl.DataFrame]) -> None:
    """Refuse ids labelled in two different splits: a flat label folder is one split, and training and validating on
    it would score the training videos."""
    names = list(tables)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = set(tables[a]["video"].unique().to_list()) & set(tables[b]["video"].unique().to_list())
            if a != b and shared:
                raise LabelError(labels_root, f"{len(shared)} ids are labelled in both the {a} and the {b} split (e.g. "
                                              f"{sorted(shared)[0]!r}); a flat folder is one split: give the folder "
                                              f"holding Train_Set and Validation_Set")


def _invalid_value(col: str) -> float | int | bool:
    """Padding value of a label-table column: False for masks, else the invalid marker of the output it belongs to."""
    if col.startswith("mask_"):
        return False
    for name in TASKS.names():
        for o in get_task(name).outputs:
            if col in o.columns:
                return o.invalid
    return -1


def align_to_frames(labels: pl.DataFrame, n_frames: dict[str, int], tolerance: int = 3,
                    label_files: dict[str, Path] | None = None) -> pl.DataFrame:
    """Fit each video's labels to its cached frame count: within `tolerance` frames pad (invalid) or truncate, beyond
    it LabelError naming the label file and both counts. Sparse (MTL) videos are only truncated."""
    if labels.height == 0:
        return labels
    has_src = "source" in labels.columns
    stats = labels.group_by("video", maintain_order=True).agg(
        pl.col("feature_video").first(), n_rows=pl.len(), extent=pl.col("frame").max() + 1,
        **({"source": pl.col("source").first().cast(pl.String)} if has_src else {}))
    cached = set(n_frames)
    vids = stats["video"].to_list()
    fvs = [v if v in cached else f for v, f in zip(vids, stats["feature_video"].to_list())]
    sources = stats["source"].to_list() if has_src else vids
    files = {v: (label_files or {}).get(v, s) for v, s in zip(vids, sources)}
    unknown = [v for v, f in zip(vids, fvs) if f not in cached]
    if unknown:
        v = unknown[0]
        raise LabelError(files[v], f"video {v!r} has no cached features ({len(unknown)} of {len(vids)} labelled videos "
                                   f"missing from the {len(cached)} cached)")
    n = np.array([n_frames[f] for f in fvs], np.int64)
    n_rows, extent = stats["n_rows"].to_numpy(), stats["extent"].to_numpy()
    dense = n_rows == extent
    bad = (extent > n + tolerance) | (dense & (extent < n - tolerance))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = f"{n_rows[i]} label rows" if dense[i] else f"labels up to frame {extent[i]}"
        raise LabelError(files[vids[i]], f"{what} but {n[i]} cached frames for {fvs[i]!r} "
                                         f"(differ by {abs(int(extent[i] - n[i]))} > tolerance {tolerance})")
    per = pl.DataFrame({"video": vids, "_fv": fvs, "_n": n})
    out = (labels.join(per, on="video", how="left").filter(pl.col("frame") < pl.col("_n"))
           .with_columns(feature_video=pl.col("_fv")).drop("_fv", "_n"))
    pad = np.where(dense, np.maximum(n - extent, 0), 0)
    if pad.sum():
        which = np.repeat(np.arange(len(vids)), pad)
        frames = np.repeat(extent, pad) + np.arange(pad.sum()) - np.repeat(np.cumsum(pad) - pad, pad)
        base = {"video": pl.Series(vids).gather(which), "feature_video": pl.Series(fvs).gather(which),
                "frame": pl.Series(frames, dtype=pl.Int64)}
        if has_src:
            base["source"] = pl.Series(sources).gather(which)
        rest = {c: pl.repeat(_invalid_value(c), len(which), eager=True, dtype=labels.schema[c])
                for c in labels.columns if c not in base}
        pad_df = pl.DataFrame({**base, **rest}).select(
            [pl.col(c).cast(labels.schema[c]) for c in labels.columns])
        out = pl.concat([out, pad_df], how="vertical").sort(["video", "frame"], maintain_order=True)
    return out


def _starts(fvs: list[str], index_of: Callable[[str], int] | dict[str, int]) -> pl.DataFrame:
    if callable(index_of) and not isinstance(index_of, dict):
        starts = [int(index_of(f)) for f in fvs]
    else:
        missing = [f for f in fvs if f not in index_of]
        if missing:
            raise ValueError(f"labels_to_arrays: {len(missing)} labelled videos have no row offset in the feature "
                             f"table (e.g. {missing[0]!r}); align_to_frames first")
        starts = [int(index_of[f]) for f in fvs]
    return pl.DataFrame({"feature_video": fvs, "_start": pl.Series(starts, dtype=pl.Int64)})


def labels_to_arrays(labels: pl.DataFrame, task: str | Task, index_of: Callable[[str], int] | dict[str, int],
                     n_rows: int | None = None) -> dict[str, np.ndarray]:
    """Dense arrays over the feature table's rows (row = start of feature_video + frame), one per output of the task:
    class ids int64[T] (expr, lsd), values float32[T, k] (va), 0/1 int64[T, k] (au), each with a bool mask_<key>[T].

    Rows without a usable label hold 0 (a valid class index, so losses never index with -1) and mask False.
    T is n_rows (pass the table's frame count) or the last labelled row + 1. Where two label ids share a
    feature video (`_left`/`_right` on per-video features) the first labelled one per row wins.
    """
    t = _record(task)
    keys = t.keys
    fvs = labels["feature_video"].unique(maintain_order=True).to_list()
    df = labels.join(_starts(fvs, index_of), on="feature_video", how="left")
    df = df.with_columns(_row=pl.col("_start") + pl.col("frame"),
                         _any=pl.any_horizontal([pl.col(f"mask_{k}") for k in keys]))
    df = df.sort(["_row", "_any"], descending=[False, True], maintain_order=True).unique("_row", keep="first",
                                                                                          maintain_order=True)
    rows = df["_row"].to_numpy()
    total = int(n_rows) if n_rows is not None else (int(rows.max()) + 1 if rows.size else 0)
    if rows.size and (rows.max() >= total or rows.min() < 0):
        raise ValueError(f"labels_to_arrays: label rows reach {int(rows.max())}, outside the table of {total} rows")
    out: dict[str, np.ndarray] = {}
    for o in t.outputs:
        mask = df[f"mask_{o.key}"].to_numpy().astype(bool)
        vals = df.select(o.columns).to_numpy().astype(o.dtype)
        vals[~mask] = 0
        flat = o.kind == "class"
        arr = np.zeros(total if flat else (total, len(o.columns)), o.dtype)
        arr[rows] = vals[:, 0] if flat else vals
        m = np.zeros(total, bool)
        m[rows] = mask
        out[o.key], out[f"mask_{o.key}"] = arr, m
    return out
