"""ABAW prediction files: ABAW3 style (one txt per id, task header, one row per frame) and ABAW5+ style (one file per
task, `image_location,<task columns>` rows `video/00001.jpg,...`; MTL `image,valence,arousal,expression,aus`)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from affcli.heads.errors import LabelError
from affcli.heads.labels import AU_NAMES, image_frame_ids, EXPR_CLASSES, KEY_COLUMNS, LSD_CLASSES, TASK_KEYS, TASKS, VA_NAMES, numeric_cells, \
    split_cells

HEADERS = {"expr": ",".join(EXPR_CLASSES), "va": ",".join(VA_NAMES), "au": ",".join(AU_NAMES),
           "mtl": "valence,arousal,expression,aus", "lsd": "expression"}
DTYPES = {"expr": np.int64, "va": np.float32, "au": np.int64, "lsd": np.int64}
N_CLASSES = {"expr": len(EXPR_CLASSES), "lsd": len(LSD_CLASSES), "au": 2}
MTL_ORDER = ("va", "expr", "au")
Values = np.ndarray | dict[str, np.ndarray]


def single_file_name(task: str) -> str:
    """File name of the ABAW5+ one-file-per-task submission written by write_predictions."""
    return f"predictions_{task}.txt"


def _keys(task: str) -> tuple[str, ...]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return MTL_ORDER if task == "mtl" else TASK_KEYS[task]


def _columns(task: str) -> list[str]:
    return [c for k in _keys(task) for c in KEY_COLUMNS[k]]


def _value_frame(task: str, video: str, values: Values) -> pl.DataFrame:
    """Per-frame value columns of one video (MTL: a dict with va, expr, au)."""
    parts = values if isinstance(values, dict) else {task: values}
    cols: dict[str, np.ndarray] = {}
    n = None
    for k in _keys(task):
        if k not in parts:
            raise ValueError(f"predictions of {video!r} for {task}: missing {k!r} (have {', '.join(parts)})")
        a = np.asarray(parts[k]).astype(DTYPES[k])
        a = a.reshape(len(a), -1)
        if a.shape[1] != len(KEY_COLUMNS[k]):
            raise ValueError(f"predictions of {video!r}: {k} has {a.shape[1]} columns, expected {len(KEY_COLUMNS[k])}")
        if n is not None and len(a) != n:
            raise ValueError(f"predictions of {video!r}: {k} has {len(a)} frames, the others {n}")
        n = len(a)
        cols.update({c: a[:, i] for i, c in enumerate(KEY_COLUMNS[k])})
    if not n:
        raise ValueError(f"predictions of {video!r}: no frames")
    return pl.DataFrame(cols)


def _select(df: pl.DataFrame, frames: list[int] | None) -> tuple[pl.DataFrame, np.ndarray]:
    """Rows of the listed 0-based frames (past the end: the last prediction carried), and their frame numbers."""
    if frames is None:
        return df, np.arange(df.height)
    f = np.asarray(frames, np.int64)
    return df[np.minimum(f, df.height - 1)], f


def _write(path: Path, header: str, df: pl.DataFrame) -> Path:
    path.write_text(header + "\n" + df.write_csv(include_header=False))
    return path


def write_predictions(out_dir: Path, task: str, per_video: dict[str, Values],
                      style: Literal["per-video", "single-file"] = "per-video",
                      frame_lists: dict[str, list[int]] | None = None) -> list[Path]:
    """Write hard predictions (dense per 0-based frame; MTL: dicts of va/expr/au) in an ABAW submission style.

    `frame_lists` picks and orders the frames written per id (e.g. from the official sample file); frames past
    the end of a video's predictions carry its last prediction, so every listed frame is filled.
    """
    _keys(task)
    if style not in ("per-video", "single-file"):
        raise ValueError(f"unknown style {style!r}; valid styles: per-video, single-file")
    if task == "lsd" and style == "per-video":
        raise ValueError("lsd predictions are one file (image,expression): use style='single-file'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames_of = frame_lists or {}
    if style == "per-video":
        return [_write(out_dir / f"{v}.txt", HEADERS[task], _select(_value_frame(task, v, vals), frames_of.get(v))[0])
                for v, vals in per_video.items()]
    blocks = []
    for v, vals in per_video.items():
        df, f = _select(_value_frame(task, v, vals), frames_of.get(v))
        image = [f"{v}.jpg"] if task == "lsd" else [f"{v}/{i + 1:05d}.jpg" for i in f.tolist()]
        blocks.append(pl.DataFrame({"image": image}).hstack(df[:1] if task == "lsd" else df))
    first = "image" if task in ("mtl", "lsd") else "image_location"
    return [_write(out_dir / single_file_name(task), f"{first},{HEADERS[task]}", pl.concat(blocks))]


def _check_header(path: Path, line: str, want: str) -> None:
    if [t.strip().lower() for t in line.split(",")] != [t.lower() for t in want.split(",")]:
        raise LabelError(path, f"line 1: header {line.strip()!r} is not {want!r}")


def _values(path: Path, task: str, cells: pl.DataFrame, first_line: int) -> pl.DataFrame:
    """Numeric value columns of a prediction file, classes checked to be in range."""
    arr = numeric_cells(path, cells, first_line)
    cols = _columns(task)
    out = {}
    for i, c in enumerate(cols):
        key = next(k for k in _keys(task) if c in KEY_COLUMNS[k])
        v = arr[:, i]
        if key in N_CLASSES:
            bad = (v != np.round(v)) | (v < 0) | (v >= N_CLASSES[key])
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise LabelError(path, f"line {first_line + j}: {c} prediction {v[j]} is not an integer in "
                                       f"0..{N_CLASSES[key] - 1}")
        out[c] = v.astype(DTYPES[key])
    return pl.DataFrame(out)


def _lines(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, IsADirectoryError):
        raise LabelError(path, "prediction file not found") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise LabelError(path, "empty prediction file")
    return lines


def _read_video_file(path: Path, task: str) -> pl.DataFrame:
    lines = _lines(path)
    _check_header(path, lines[0], HEADERS[task])
    vals = _values(path, task, split_cells(path, lines[1:], len(_columns(task)), 2), 2)
    ids = pl.DataFrame({"video": [path.stem] * vals.height, "frame": np.arange(vals.height, dtype=np.int64)})
    return ids.hstack(vals)


def _read_single_file(path: Path, task: str) -> pl.DataFrame:
    lines = _lines(path)
    first = "image" if task in ("mtl", "lsd") else "image_location"
    _check_header(path, lines[0], f"{first},{HEADERS[task]}")
    cells = split_cells(path, lines[1:], 1 + len(_columns(task)), 2)
    img = cells["c0"]
    if task == "lsd":
        ids = pl.DataFrame({"video": img.str.replace(r"\.\w+$", ""), "frame": pl.repeat(0, len(img), eager=True,
                                                                                        dtype=pl.Int64)})
    else:
        ids = image_frame_ids(path, img, 2)
    return ids.hstack(_values(path, task, cells.drop("c0"), 2))


def read_prediction_table(path: Path, task: str) -> pl.DataFrame:
    """Either style -> table (video, frame 0-based, value columns named as in heads.labels) in file order.

    `path` is the single file, a folder holding it (predictions_<task>.txt), or a folder of per-id txt files.
    """
    _keys(task)
    path = Path(path)
    if path.is_dir() and (path / single_file_name(task)).is_file():
        path = path / single_file_name(task)
    if path.is_file():
        return _read_single_file(path, task)
    if not path.is_dir():
        raise LabelError(path, "no such prediction file or folder")
    files = [p for p in sorted(path.glob("*.txt")) if not p.name.startswith("predictions_")]
    if not files:
        raise LabelError(path, f"no per-video .txt predictions and no {single_file_name(task)}")
    return pl.concat([_read_video_file(p, task) for p in files])


def read_predictions(path: Path, task: str) -> dict[str, Values]:
    """Either style -> {id: rows in file order} (int64 [n] expr/lsd, float32 [n, 2] va, int64 [n, 12] au; MTL: a dict
    of those), the structure write_predictions takes."""
    table = read_prediction_table(path, task)
    out: dict[str, Values] = {}
    for (video,), df in table.partition_by("video", maintain_order=True, as_dict=True).items():
        parts = {}
        for k in _keys(task):
            a = df.select(KEY_COLUMNS[k]).to_numpy().astype(DTYPES[k])
            parts[k] = a if a.shape[1] > 1 else a[:, 0]
        out[video] = parts if task == "mtl" else parts[task]
    return out
