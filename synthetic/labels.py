"""ABAW per-video label files as the challenge ships them (header row, one row per frame), for synthetic datasets.

The format is the challenge's (common.vocab holds its folder, class and column names), written here without the
task records of heads/, which read these files back (tests/test_demo_data.py checks the round trip)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from affcli.common.vocab import AU_NAMES, CHALLENGE_FOLDERS, EXPR_CLASSES, SPLIT_FOLDERS, VA_NAMES

FILES: dict[str, tuple[tuple[str, ...], str]] = {"expr": (EXPR_CLASSES, "%d"), "va": (VA_NAMES, "%.4f"),
                                                 "au": (AU_NAMES, "%d")}
"""Per-video task -> (header, row format): class index, 4-decimal values, 0/1 per action unit."""


def write_label_file(label_root: str | Path, task: str, split: str, video: str, values: np.ndarray) -> Path:
    """`label_root/<challenge>/<split set>/<video>.txt` of a per-video task (expr, va, au): its header, then one row
    per frame."""
    if task not in FILES:
        raise ValueError(f"task {task!r} has no per-video label files; per-video tasks: {', '.join(FILES)}")
    header, fmt = FILES[task]
    body = "\n".join(",".join(fmt % v for v in np.atleast_1d(r)) for r in np.asarray(values).tolist())
    path = Path(label_root) / CHALLENGE_FOLDERS[task][0] / SPLIT_FOLDERS[split][0] / f"{video}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(header) + f"\n{body}\n")
    return path
