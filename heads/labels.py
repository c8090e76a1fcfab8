"""Aff-Wild2 / s-Aff-Wild2 / LSD label files -> polars tables keyed by (video, frame) -> dense arrays for the trainer.

Invalid markers (EXPR -1, VA -5, AU -1) are kept in the table and exposed as boolean `mask_*` columns (True = usable).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from affcli.heads.errors import LabelError

TASKS = ("expr", "va", "au", "mtl", "lsd")
EXPR_CLASSES = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"]
AU_NAMES = ["AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26"]
LSD_CLASSES = ["ANGRER", "DISGUST", "FEAR", "HAPPINESS", "SADNESS", "SURPRISE"]
VA_NAMES = ["valence", "arousal"]

INVALID = {"expr": -1, "va": -5.0, "au": -1, "lsd": -1}
TASK_KEYS = {"expr": ("expr",), "va": ("va",), "au": ("au",), "mtl": ("va", "expr", "au"), "lsd": ("lsd",)}
KEY_COLUMNS = {"expr": ["expr"], "va": VA_NAMES, "au": AU_NAMES, "lsd": ["lsd"]}
TASK_DIRS = {"expr": ("EXPR_Classification_Challenge", "EXPR_Recognition_Challenge", "EXPR_Set"),
             "va": ("VA_Estimation_Challenge", "VA_Set"), "au": ("AU_Detection_Challenge", "AU_Set")}
SPLIT_DIRS = {"train": ("Train_Set", "Training_Set"), "val": ("Validation_Set",)}
MTL_FILES = {"train": ("training_set_annotations.txt", "train_set.txt", "training_set.txt"),
             "val": ("validation_set_annotations.txt", "validation_set.txt", "val_set.txt")}
LSD_DIRS = {"train": ("training_set_synthetic_images",), "val": ("validation_set_real_images",)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SIDE_SUFFIX = r"_(left|right)$"


def _check_task(task: str, allowed: tuple[str, ...] = TASKS) -> None:
    if task not in allowed:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(allowed)}")


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


def check_values(path: Path, key: str, arr: np.ndarray, first_line: int, n_classes: int = 8) -> None:
    """Values of one label kind in range (integers for classes, VA in [-1, 1] or -5); LabelError naming the line."""
    if key == "va":
        ok = ((arr >= -1.0) & (arr <= 1.0)) | (arr == -5.0)
        what = "VA values must lie in [-1, 1] or be -5 (invalid)"
    elif key == "au":
        ok = np.isin(arr, (-1.0, 0.0, 1.0))
        what = "AU values must be 0, 1 or -1 (invalid)"
    else:
        ok = (arr == np.round(arr)) & (arr >= -1) & (arr < n_classes)
        what = f"{key} values must be integers 0..{n_classes - 1} or -1 (invalid)"
    if arr.size == 0:
        return
    bad = ~ok.reshape(len(arr), -1).all(1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise LabelError(path, f"line {first_line + i}: {arr[i].tolist()} out of range: {what}")


def _norm(tokens: list[str]) -> list[str]:
    return [t.strip().lower() for t in tokens]


def _expected_header(task: str, header: list[str]) -> int:
    """Columns the header announces (EXPR: 8 classes, or 7 in ABAW1-2 files); 0 when it is not the task's header."""
    if task == "expr":
        for n in (8, 7):
            if _norm(header) == _norm(EXPR_CLASSES[:n]):
                return n
        return 0
    names = VA_NAMES if task == "va" else AU_NAMES
    return len(names) if _norm(header) == _norm(names) else 0


def read_label_file(path: Path, task: Literal["expr", "va", "au"]) -> np.ndarray:
    """One per-video Aff-Wild2 label txt -> [n] int64 (expr), [n, 2] float32 (va) or [n, 12] int64 (au).

    Row i after the header is frame i (0-based here, `{i+1:05d}.jpg`); invalid markers are kept as they are.
    """
    _check_task(task, ("expr", "va", "au"))
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise LabelError(path, f"empty file (expected the {task} header)")
    header = lines[0].split(",")
    n_classes = _expected_header(task, header)
    if not n_classes:
        want = {"expr": EXPR_CLASSES, "va": VA_NAMES, "au": AU_NAMES}[task]
        raise LabelError(path, f"line 1: header {lines[0].strip()!r} is not the {task} header {','.join(want)!r}")
    n_cols = 1 if task == "expr" else n_classes
    arr = numeric_cells(path, split_cells(path, lines[1:], n_cols, 2), 2)
    check_values(path, task, arr, 2, n_classes)
    if task == "va":
        return arr.astype(np.float32)
    return arr.astype(np.int64).reshape(-1) if task == "expr" else arr.astype(np.int64)


def _find(root: Path, names: tuple[str, ...], want_dir: bool = True) -> Path | None:
    """root/<name> or root/*/<name> for the first name that exists."""
    for name in names:
        for cand in [root / name, *sorted(root.glob(f"*/{name}"))]:
            if (cand.is_dir() if want_dir else cand.is_file()):
                return cand
    return None


def find_task_dirs(labels_root: Path, task: Literal["expr", "va", "au"]) -> dict[str, Path]:
    """{"train": .../Train_Set, "val": .../Validation_Set} of a task under any ABAW edition's folder name, or a root
    that holds the split folders itself."""
    _check_task(task, ("expr", "va", "au"))
    root = Path(labels_root)
    if not root.is_dir():
        raise LabelError(root, "label root is not a folder")
    has_split = any((root / d).is_dir() for ds in SPLIT_DIRS.values() for d in ds)
    task_dir = root if has_split else _find(root, TASK_DIRS[task])
    if task_dir is None:
        raise LabelError(root, f"no {task} annotations: expected one of {', '.join(TASK_DIRS[task])} "
                               f"(or Train_Set/Validation_Set directly)")
    out = {}
    for split, names in SPLIT_DIRS.items():
        d = next((task_dir / n for n in names if (task_dir / n).is_dir()), None)
        if d is not None:
            out[split] = d
    if not out:
        raise LabelError(task_dir, "holds neither Train_Set nor Validation_Set")
    return out


def label_files(labels_root: Path, task: Literal["expr", "va", "au"],
                split: Literal["train", "val"]) -> dict[str, Path]:
    """{video id: label txt} of one split of a per-video task."""
    dirs = find_task_dirs(labels_root, task)
    if split not in dirs:
        raise LabelError(labels_root, f"no {split} split for {task} (found: {', '.join(dirs)})")
    files = {p.stem: p for p in sorted(dirs[split].glob("*.txt"))}
    if not files:
        raise LabelError(dirs[split], "no .txt label files")
    return files


def _with_masks(df: pl.DataFrame, keys: tuple[str, ...]) -> pl.DataFrame:
    masks = {"expr": pl.col("expr") >= 0, "lsd": pl.col("lsd") >= 0,
             "va": pl.all_horizontal([pl.col(c) >= -1.0 for c in VA_NAMES]),
             "au": pl.all_horizontal([pl.col(c) >= 0 for c in AU_NAMES])}
    return df.with_columns(**{f"mask_{k}": masks[k] for k in keys})


def _key_frame(key: str, arr: np.ndarray) -> dict[str, pl.Series]:
    if key == "va":
        return {c: pl.Series(c, arr[:, i], pl.Float32) for i, c in enumerate(VA_NAMES)}
    if key == "au":
        return {c: pl.Series(c, arr[:, i], pl.Int8) for i, c in enumerate(AU_NAMES)}
    return {key: pl.Series(key, arr.reshape(-1), pl.Int64)}


def _feature_video(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(feature_video=pl.col("video").str.replace(SIDE_SUFFIX, ""))


def _per_video_table(labels_root: Path, task: str, split: str) -> pl.DataFrame:
    files = label_files(labels_root, task, split)
    arrays = [read_label_file(p, task) for p in files.values()]
    lens = np.array([len(a) for a in arrays], np.int64)
    which = np.repeat(np.arange(len(files)), lens)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    data = np.concatenate(arrays) if arrays else np.zeros(0)
    df = pl.DataFrame({"video": pl.Series(list(files), dtype=pl.String).gather(which),
                       "frame": np.arange(len(which), dtype=np.int64) - starts[which],
                       **_key_frame(task, data),
                       "source": pl.Series([str(p) for p in files.values()], dtype=pl.String).gather(which)})
    return df


def find_mtl_file(labels_root: Path, split: Literal["train", "val"]) -> Path:
    """The s-Aff-Wild2 annotation file of a split (ABAW3 MTL_Challenge/train_set.txt, ABAW4/7 *_set_annotations.txt);
    labels_root may be the file itself."""
    root = Path(labels_root)
    if root.is_file():
        return root
    found = _find(root, MTL_FILES[split], want_dir=False)
    if found is None:
        raise LabelError(root, f"no MTL {split} annotations: expected one of {', '.join(MTL_FILES[split])}")
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


def read_mtl_file(path: Path) -> pl.DataFrame:
    """s-Aff-Wild2 rows `video/NNNNN.jpg,valence,arousal,expression,AU1..AU26` -> table (frame 0-based, sparse)."""
    path = Path(path)
    lines = _lines(path)
    first = 1 if lines and ".jpg" not in lines[0].split(",")[0].lower() else 0
    cells = split_cells(path, lines[first:], 16, first + 1)
    parts = image_frame_ids(path, cells["c0"], first + 1)
    arr = numeric_cells(path, cells.drop("c0"), first + 1)
    check_values(path, "va", arr[:, 0:2], first + 1)
    check_values(path, "expr", arr[:, 2], first + 1)
    check_values(path, "au", arr[:, 3:], first + 1)
    return parts.with_columns(**_key_frame("va", arr[:, :2].astype(np.float32)),
                              **_key_frame("expr", arr[:, 2].astype(np.int64)),
                              **_key_frame("au", arr[:, 3:].astype(np.int64)), source=pl.lit(str(path)))


def read_lsd_folder(folder: Path) -> pl.DataFrame:
    """LSD class folders (ANGRER ... SURPRISE) of images -> (video = image stem, or class/stem when stems repeat,
    frame 0, lsd class id)."""
    folder = Path(folder)
    lookup = {c: i for i, c in enumerate(LSD_CLASSES)} | {"ANGER": 0}
    paths, classes = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name.upper() not in lookup:
            raise LabelError(sub, f"unknown LSD class folder; valid: {', '.join(LSD_CLASSES)}")
        imgs = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += imgs
        classes += [lookup[sub.name.upper()]] * len(imgs)
    if not paths:
        raise LabelError(folder, f"no images in class folders {', '.join(LSD_CLASSES)}")
    stems = [p.stem for p in paths]
    if len(set(stems)) < len(stems):
        stems = [f"{p.parent.name}/{p.stem}" for p in paths]
    return pl.DataFrame({"video": stems, "frame": np.zeros(len(paths), np.int64),
                         "lsd": np.asarray(classes, np.int64), "source": [str(p) for p in paths]})


def load_labels(labels_root: Path, task: str, split: Literal["train", "val"]) -> pl.DataFrame:
    """Long table (video, feature_video, frame 0-based, task columns, mask_* columns, source file) of one split."""
    _check_task(task)
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}; valid splits: train, val")
    if task == "mtl":
        df = read_mtl_file(find_mtl_file(labels_root, split))
    elif task == "lsd":
        root = Path(labels_root)
        folder = _find(root, LSD_DIRS[split])
        if folder is None:
            raise LabelError(root, f"no LSD {split} folder: expected {LSD_DIRS[split][0]}/<CLASS>/")
        df = read_lsd_folder(folder)
    else:
        df = _per_video_table(labels_root, task, split)
    keys = TASK_KEYS[task]
    cols = ["video", "feature_video", "frame", *[c for k in keys for c in KEY_COLUMNS[k]],
            *[f"mask_{k}" for k in keys], "source"]
    out = _with_masks(_feature_video(df), keys).with_columns(pl.col("source").cast(pl.Categorical))
    return out.select(cols)


def _invalid_value(col: str) -> float | int | bool:
    if col.startswith("mask_"):
        return False
    if col in VA_NAMES:
        return INVALID["va"]
    return INVALID["au"] if col in AU_NAMES else INVALID.get(col, -1)


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


def labels_to_arrays(labels: pl.DataFrame, task: str, index_of: Callable[[str], int] | dict[str, int],
                     n_rows: int | None = None) -> dict[str, np.ndarray]:
    """Dense arrays over the feature table's rows (row = start of feature_video + frame): expr int64[T],
    va float32[T, 2], au int64[T, 12], lsd int64[T], each with a per-frame bool mask_<key>[T].

    Rows without a usable label hold 0 (a valid class index, so losses never index with -1) and mask False.
    T is n_rows (pass the table's frame count) or the last labelled row + 1. Where two label ids share a
    feature video (`_left`/`_right` on per-video features) the first labelled one per row wins.
    """
    _check_task(task)
    keys = TASK_KEYS[task]
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
    dtypes = {"expr": np.int64, "va": np.float32, "au": np.int64, "lsd": np.int64}
    for k in keys:
        mask = df[f"mask_{k}"].to_numpy().astype(bool)
        vals = df.select(KEY_COLUMNS[k]).to_numpy().astype(dtypes[k])
        vals[~mask] = 0
        width = len(KEY_COLUMNS[k])
        arr = np.zeros((total, width) if width > 1 else total, dtypes[k])
        arr[rows] = vals if width > 1 else vals[:, 0]
        m = np.zeros(total, bool)
        m[rows] = mask
        out[k], out[f"mask_{k}"] = arr, m
    return out
