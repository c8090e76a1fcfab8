"""ABAW prediction files: ABAW3 style (one txt per id, task header, one row per frame) and ABAW5+ style (one file per
task, `image_location,<task columns>` rows `video/00001.jpg,...`; MTL `image,valence,arousal,expression,aus`).
Headers, columns and row kind come from the task record's `submission` and outputs (heads.tasks)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from affcli.common.ids import check_id
from affcli.common.names import safe_name
from affcli.heads.errors import LabelError
from affcli.heads.data.labels import image_frame_ids, numeric_cells, split_cells
from affcli.heads.tasks import Output, Task, get_task

Values = np.ndarray | dict[str, np.ndarray]


def single_file_name(task: str | Task) -> str:
    """File name of the ABAW5+ one-file-per-task submission written by write_predictions."""
    return f"predictions_{_task(task).name}.txt"


def _task(task: str | Task) -> Task:
    return get_task(task) if isinstance(task, str) else task


def _first_column(t: Task) -> str:
    return f"{t.submission.image_column},{t.submission.header}"


def _value_frame(t: Task, video: str, values: Values) -> pl.DataFrame:
    """Per-frame value columns of one video (a task with several outputs: a dict keyed by output, e.g. va, expr, au)."""
    parts = values if isinstance(values, dict) else {t.outputs[0].key: values}
    cols: dict[str, np.ndarray] = {}
    n = None
    for o in t.outputs:
        if o.key not in parts:
            raise ValueError(f"predictions of {video!r} for {t.name}: missing {o.key!r} (have {', '.join(parts)})")
        a = np.asarray(parts[o.key]).astype(o.dtype)
        a = a.reshape(len(a), -1)
        if a.shape[1] != len(o.columns):
            raise ValueError(f"predictions of {video!r}: {o.key} has {a.shape[1]} columns, expected {len(o.columns)}")
        if n is not None and len(a) != n:
            raise ValueError(f"predictions of {video!r}: {o.key} has {len(a)} frames, the others {n}")
        n = len(a)
        cols.update({c: a[:, i] for i, c in enumerate(o.columns)})
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
    """Write a prediction file whole (temp file + rename): an interrupted predict never leaves half a file."""
    import os

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(header + "\n" + df.write_csv(include_header=False))
    os.replace(tmp, path)
    return path


def write_predictions(out_dir: Path, task: str, per_video: dict[str, Values],
                      style: Literal["per-video", "single-file"] = "per-video",
                      frame_lists: dict[str, list[int]] | None = None) -> list[Path]:
    """Write hard predictions (dense per 0-based frame; several outputs: dicts such as va/expr/au) in an ABAW
    submission style.

    `frame_lists` picks and orders the frames written per id (e.g. from the official sample file); frames past
    the end of a video's predictions carry its last prediction, so every listed frame is filled.
    """
    t = _task(task)
    if style not in ("per-video", "single-file"):
        raise ValueError(f"unknown style {style!r}; valid styles: per-video, single-file")
    per_frame = t.submission.per_frame
    if not per_frame and style == "per-video":
        raise ValueError(f"{t.name} predictions are one file ({_first_column(t)}): use style='single-file'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames_of = frame_lists or {}
    if style == "per-video":
        return [_write(out_dir / f"{safe_name(v, 'video id')}.txt", t.submission.header,
                       _select(_value_frame(t, v, vals), frames_of.get(v))[0]) for v, vals in per_video.items()]
    blocks = []
    check_single_file_ids(t, list(per_video))
    for v, vals in per_video.items():
        df, f = _select(_value_frame(t, v, vals), frames_of.get(v))
        image = [f"{v}/{i + 1:05d}.jpg" for i in f.tolist()] if per_frame else [f"{v}.jpg"]
        blocks.append(pl.DataFrame({"image": image}).hstack(df if per_frame else df[:1]))
    return [_write(out_dir / single_file_name(t), _first_column(t), pl.concat(blocks))]


def check_single_file_ids(task: str | Task, ids: list[str]) -> None:
    """Refuse ids the one-file-per-task format cannot carry so that `score` reads them back: control characters and
    line breaks, surrounding whitespace, commas (the file is comma-separated); one ValueError line."""
    name = single_file_name(_task(task))
    for v in ids:
        check_id(v, f"{name}: video id")
        if "," in v:
            raise ValueError(f"{name}: video id {v!r} holds a comma, which the comma-separated single file cannot "
                             f"carry; use style='per-video'")


def _check_header(path: Path, line: str, want: str) -> None:
    if [t.strip().lower() for t in line.split(",")] != [t.lower() for t in want.split(",")]:
        raise LabelError(path, f"line 1: header {line.strip()!r} is not {want!r}")


def _n_values(o: Output) -> int | None:
    """How many integer values a prediction of the output may take (class ids, 0/1), None for real values."""
    return {"class": o.dim, "multilabel": 2}.get(o.kind)


def _values(path: Path, t: Task, cells: pl.DataFrame, first_line: int) -> pl.DataFrame:
    """Numeric value columns of a prediction file, class ids and 0/1 labels checked to be in range."""
    arr = numeric_cells(path, cells, first_line)
    out = {}
    i = 0
    for o in t.outputs:
        n = _n_values(o)
        for c in o.columns:
            v = arr[:, i]
            i += 1
            if n is not None:
                bad = (v != np.round(v)) | (v < 0) | (v >= n)
                if bad.any():
                    j = int(np.flatnonzero(bad)[0])
                    raise LabelError(path, f"line {first_line + j}: {c} prediction {v[j]} is not an integer in "
                                           f"0..{n - 1}")
            out[c] = v.astype(o.dtype)
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


def _read_video_file(path: Path, t: Task) -> pl.DataFrame:
    lines = _lines(path)
    _check_header(path, lines[0], t.submission.header)
    vals = _values(path, t, split_cells(path, lines[1:], len(t.columns), 2), 2)
    ids = pl.DataFrame({"video": [path.stem] * vals.height, "frame": np.arange(vals.height, dtype=np.int64)})
    return ids.hstack(vals)


def _read_single_file(path: Path, t: Task) -> pl.DataFrame:
    lines = _lines(path)
    _check_header(path, lines[0], _first_column(t))
    cells = split_cells(path, lines[1:], 1 + len(t.columns), 2)
    img = cells["c0"]
    if t.submission.per_frame:
        ids = image_frame_ids(path, img, 2)
    else:
        ids = pl.DataFrame({"video": img.str.replace(r"\.\w+$", ""), "frame": pl.repeat(0, len(img), eager=True,
                                                                                        dtype=pl.Int64)})
    return ids.hstack(_values(path, t, cells.drop("c0"), 2))


def read_prediction_table(path: Path, task: str | Task) -> pl.DataFrame:
    """Either style -> table (video, frame 0-based, value columns named as the task's outputs) in file order.

    `path` is the single file, a folder holding it (predictions_<task>.txt), or a folder of per-id txt files.
    """
    t = _task(task)
    path = Path(path)
    if path.is_dir() and (path / single_file_name(t)).is_file():
        path = path / single_file_name(t)
    if path.is_file():
        return _read_single_file(path, t)
    if not path.is_dir():
        raise LabelError(path, "no such prediction file or folder")
    files = [p for p in sorted(path.glob("*.txt")) if not p.name.startswith("predictions_")]
    if not files:
        raise LabelError(path, f"no per-video .txt predictions and no {single_file_name(t)}")
    return pl.concat([_read_video_file(p, t) for p in files])


def read_predictions(path: Path, task: str | Task) -> dict[str, Values]:
    """Either style -> {id: rows in file order} (int64 [n] class ids, float32 [n, k] values, int64 [n, k] 0/1; a task
    with several outputs: a dict of those), the structure write_predictions takes."""
    t = _task(task)
    table = read_prediction_table(path, t)
    out: dict[str, Values] = {}
    for (video,), df in table.partition_by("video", maintain_order=True, as_dict=True).items():
        parts = {}
        for o in t.outputs:
            a = df.select(o.columns).to_numpy().astype(o.dtype)
            parts[o.key] = a[:, 0] if o.kind == "class" else a
        out[video] = parts if len(t.outputs) > 1 else parts[t.outputs[0].key]
    return out


def prediction_frame(videos: list[str], starts: np.ndarray, rows: np.ndarray, preds: dict[str, np.ndarray],
                     labels: dict[str, np.ndarray] | None = None) -> pl.DataFrame:
    """One row per frame: video, frame (1-based), predicted probabilities/values and, if given, labels and masks."""
    vid_of = np.searchsorted(starts, rows, side="right") - 1
    cols: dict[str, object] = {"video": [videos[i] for i in vid_of], "frame": (rows - starts[vid_of] + 1).astype(np.int64)}
    for k, p in preds.items():
        for j in range(p.shape[1]):
            cols[f"{k}_{j}"] = p[:, j].astype(np.float32)
    for k, v in (labels or {}).items():
        v = np.asarray(v)
        if v.ndim == 1:
            cols[f"label_{k}" if not k.startswith("mask_") else k] = v
        else:
            for j in range(v.shape[1]):
                cols[f"label_{k}_{j}" if not k.startswith("mask_") else f"{k}_{j}"] = v[:, j]
    return pl.DataFrame(cols)
