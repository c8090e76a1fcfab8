"""ABAW per-video label files as the challenge ships them, written for synthetic datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from affcli.common.vocab import AU_NAMES, EXPR_CLASSES, VA_NAMES

TASK_DIRS = {"expr": "EXPR_Recognition_Challenge", "va": "VA_Estimation_Challenge", "au": "AU_Detection_Challenge"}
SPLIT_DIRS = {"train": "Train_Set", "val": "Validation_Set"}
HEADERS = {"expr": ",".join(EXPR_CLASSES), "va": ",".join(VA_NAMES), "au": ",".join(AU_NAMES)}


def write_label_file(label_root: str | Path, task: str, split: str, video: str, values: np.ndarray) -> Path:
    """`label_root/<challenge>/<split set>/<video>.txt`: the task's header, then one row per frame
    (class index for expr, 4-decimal valence,arousal for va, 0/1 per AU for au)."""
    rows = np.asarray(values)
    fmt = "%.4f" if task == "va" else "%d"
    body = "\n".join(",".join(fmt % v for v in np.atleast_1d(r)) for r in rows.tolist())
    path = Path(label_root) / TASK_DIRS[task] / SPLIT_DIRS[split] / f"{video}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{HEADERS[task]}\n{body}\n")
    return path
