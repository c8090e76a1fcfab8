"""Aff-Wild2 `cropped_aligned/<video>/NNNNN.jpg` folders as a frame stream: 1-based names, gaps where no face."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from affcli.pipeline.errors import MediaError

_FRAME_NAME = re.compile(r"^(\d+)\.(jpe?g|png)$", re.IGNORECASE)


def _frame_files(folder: Path) -> dict[int, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(folder, "not a folder of frames")
    files: dict[int, Path] = {}
    for entry in folder.iterdir():
        m = _FRAME_NAME.match(entry.name)
        if m and int(m.group(1)) >= 1:
            files[int(m.group(1))] = entry
    if not files:
        raise MediaError(folder, "no frame images named like 00001.jpg")
    return files


def frame_folder_index(folder: Path) -> tuple[int, np.ndarray]:
    """(n_frames = the largest 1-based index, present mask [n_frames] bool); frame i is file i+1."""
    files = _frame_files(folder)
    idx = np.fromiter(files, np.int64, len(files))
    present = np.zeros(int(idx.max()), bool)
    present[idx - 1] = True
    return len(present), present


def _read(path: Path | None) -> tuple[np.ndarray | None, Path | None]:
    if path is None:
        return None, None
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return (None, path) if img is None else (cv2.cvtColor(img, cv2.COLOR_BGR2RGB), None)


def iter_frame_folder(
    folder: Path,
    batch_size: int = 64,
    fps: float = 30.0,
    size: int | None = None,
    threads: int = 4,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (frames uint8 [B,H,W,3] RGB, timestamps [B] = i / fps, ok [B] bool) over frames 0..n-1.

    Missing files and unreadable images give zeros and ok=False (unreadable ones also warn, naming the file).
    Images are resized to size x size when `size` is given, else to the size of the first readable one.
    """
    folder = Path(folder)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    files = _frame_files(folder)
    n = max(files)
    shape = (size, size) if size is not None else None
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="jpg") as pool:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            decoded = list(pool.map(_read, (files.get(i + 1) for i in range(start, stop))))
            if shape is None:
                shape = next((img.shape[:2] for img, _ in decoded if img is not None), None)
                if shape is None:
                    shape = _first_readable_shape(folder, files, stop)
            frames = np.zeros((stop - start, *shape, 3), np.uint8)
            ok = np.zeros(stop - start, bool)
            for j, (img, bad) in enumerate(decoded):
                if bad is not None:
                    warnings.warn(f"{bad}: unreadable image, stored as zeros with ok=False", stacklevel=2)
                if img is None:
                    continue
                frames[j] = (
                    img if img.shape[:2] == shape else cv2.resize(img, shape[::-1], interpolation=cv2.INTER_AREA)
                )
                ok[j] = True
            yield frames, np.arange(start, stop, dtype=np.float64) / fps, ok


def _first_readable_shape(folder: Path, files: dict[int, Path], after: int) -> tuple[int, int]:
    for i in sorted(k for k in files if k > after):
        img, _ = _read(files[i])
        if img is not None:
            return img.shape[:2]
    raise MediaError(folder, "no readable frame image")
