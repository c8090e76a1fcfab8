"""ABAW per-video label files as the challenge ships them, written for synthetic datasets from the task records."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from affcli.heads.tasks import get_task


def write_label_file(label_root: str | Path, task: str, split: str, video: str, values: np.ndarray) -> Path:
    """`label_root/<challenge>/<split set>/<video>.txt` of a per-video task: its header, then one row per frame
    (class index, 4-decimal values for a regression output, 0/1 per label for a multi-label one)."""
    rec = get_task(task)
    if rec.labels.layout != "per-video":
        raise ValueError(f"task {task!r} keeps its labels as {rec.labels.layout}, not per-video txt files")
    rows = np.asarray(values)
    fmt = "%.4f" if rec.outputs[0].kind == "reg" else "%d"
    body = "\n".join(",".join(fmt % v for v in np.atleast_1d(r)) for r in rows.tolist())
    path = Path(label_root) / rec.labels.folders[0] / rec.labels.splits[split][0] / f"{video}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(rec.label_headers()[0]) + f"\n{body}\n")
    return path
