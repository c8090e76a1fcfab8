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


MAX_FRAME_INDEX = 10_000_000  # frame numbers beyond this (about 93 hours at 30 fps) are a stray file name
MAX_IMAGE_PIXELS = 1 << 28      # 16384 x 16384: no decode budget lets a header claim more


def _frame_files(folder: Path) -> dict[int, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(folder, "not a folder of frames")
    files: dict[int, Path] = {}
    for entry in folder.iterdir():
        m = _FRAME_NAME.fullmatch(entry.name)
        if m and int(m.group(1)) >= 1:
            i = int(m.group(1))
            if i > MAX_FRAME_INDEX:
                raise MediaError(entry, f"frame number {i} is beyond {MAX_FRAME_INDEX:,} (a stray file name?); "
                                        f"move it out of the folder")
            files[i] = entry
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


def image_size(path: Path | bytes) -> tuple[int, int] | str:
    """(width, height) from an image's header (a file, or its bytes), read without decoding it (Pillow), or what is
    wrong with it."""
    import io

    from PIL import Image, UnidentifiedImageError

    _quiet_bomb_warning(Image.DecompressionBombWarning)
    try:
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as im:
            return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError as e:
        claimed = re.search(r"\((\d+) pixels\)", str(e))
        return f"its header claims {int(claimed.group(1)):,} pixels" if claimed else "its header claims too many pixels"
    except UnidentifiedImageError:
        return "not an image (no image header Pillow knows)"
    except (OSError, ValueError, SyntaxError) as e:
        return f"not an image ({' '.join(str(e).split()) or type(e).__name__})"


def _quiet_bomb_warning(category: type[Warning]) -> None:
    """Ignore Pillow's DecompressionBombWarning by a narrow filter, added once (the size check is the caller's). Not
    `catch_warnings`, which is not thread-safe: headers are read in decode threads, and two of them restoring each
    other's saved filters left a catch-all `ignore` behind that silenced every later invalid-frame line."""
    if not any(f[0] == "ignore" and f[2] is category and f[1] is None for f in warnings.filters):
        warnings.filterwarnings("ignore", category=category)


_ARITHMETIC_SOF = tuple(bytes([0xFF, m]) for m in (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def _jpeg_too_short(data: bytes, w: int, h: int) -> bool:
    """True when a Huffman-coded JPEG has fewer bits than its header's 8x8 blocks: every block costs at least one
    (its DC code), so a header claiming more blocks lies, and libjpeg would fill the rest with grey. Arithmetic-coded
    files (which can go below a bit a block) are not judged."""
    if data[:3] != b"\xff\xd8\xff" or any(m in data for m in _ARITHMETIC_SOF):
        return False
    return 8 * len(data) < -(-w // 8) * -(-h // 8)


def _cut_short(data: bytes) -> bool:
    """True when a JPEG or PNG ends before its end marker (a truncated file; OpenCV would fill the rest with grey)."""
    if data[:3] == b"\xff\xd8\xff":  # JPEG: the end-of-image marker after the last scan (never inside scan data)
        sos = data.rfind(b"\xff\xda")
        return sos < 0 or data.find(b"\xff\xd9", sos) < 0
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-64:]
    return False


def read_image(path: Path | None, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray | None, str | None]:
    """(RGB uint8 [H,W,3], None) or (None, what is wrong): the header's size is checked against `max_pixels` before
    anything is decoded (a header claiming 65000x65000 is refused, not allocated), a JPEG/PNG cut short and any
    OpenCV failure are problems too. None (a missing frame) gives (None, None)."""
    if path is None:
        return None, None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"
    if not data:
        return None, "the file is empty"
    if _cut_short(data):
        return None, "the file is cut short (no end marker)"
    size = image_size(data)
    if isinstance(size, str):
        return None, size
    w, h = size
    if w < 1 or h < 1:
        return None, f"its header gives the size {w}x{h}"
    if w * h > max_pixels:
        return None, (f"its header claims {w}x{h} ({w * h * 3 / 2**20:,.0f} MiB decoded), more than the "
                      f"{max_pixels * 3 / 2**20:,.0f} MiB one image may take (--decode-memory-mb)")
    if _jpeg_too_short(data, w, h):
        return None, f"its header claims {w}x{h}, more than its {len(data):,} bytes can hold"
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:
        return None, f"OpenCV cannot decode it ({' '.join(str(e).split())[:160]})"
    if img is None:
        return None, "OpenCV cannot decode it"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), None


def warn_invalid(path: Path, problem: str) -> None:
    """The one line an unusable image gets: its path, the problem, and that its row is kept as zeros."""
    warnings.warn(f"{path}: invalid image: {problem}; stored as zeros with ok=False", stacklevel=3)


def _load(path: Path | None, shape: tuple[int, int] | None, max_pixels: int
          ) -> tuple[np.ndarray | None, str | None]:
    """read_image, then (in the worker thread, so only the resized frame is kept) an area resize to `shape`."""
    img, problem = read_image(path, max_pixels)
    if img is not None and shape is not None and img.shape[:2] != shape:
        img = cv2.resize(img, shape[::-1], interpolation=cv2.INTER_AREA)
    return img, problem


def iter_frame_folder(
    folder: Path,
    batch_size: int = 64,
    fps: float = 30.0,
    size: int | None = None,
    threads: int = 4,
    max_bytes: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (frames uint8 [B,H,W,3] RGB, timestamps [B] = i / fps, ok [B] bool) over frames 0..n-1.

    Missing files and invalid images give zeros and ok=False (invalid ones also warn, one line naming the file and
    the problem: junk, cut short, a header claiming more pixels than `max_bytes` allows). Images are resized to
    size x size when `size` is given, else to the size of the first readable one. `max_bytes` bounds a batch (and
    each image decoded for it): the batch shrinks with the frame size.
    """
    folder = Path(folder)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    files = _frame_files(folder)
    n = max(files)
    max_pixels = MAX_IMAGE_PIXELS if max_bytes is None else max(1, min(MAX_IMAGE_PIXELS, max_bytes // 3))
    shape = (size, size) if size is not None else None
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="jpg") as pool:
        start = 0
        while start < n:
            if shape is None:
                shape = _first_readable_shape(folder, files, start, max_pixels)
            per = shape[0] * shape[1] * 3
            step = batch_size if max_bytes is None else max(1, min(batch_size, max_bytes // per))
            stop = min(n, start + step)
            paths = [files.get(i + 1) for i in range(start, stop)]
            decoded = list(pool.map(lambda p: _load(p, shape, max_pixels), paths))
            frames = np.zeros((stop - start, *shape, 3), np.uint8)
            ok = np.zeros(stop - start, bool)
            for j, (img, problem) in enumerate(decoded):
                if problem is not None:
                    warn_invalid(files[start + j + 1], problem)
                if img is not None:
                    frames[j] = img
                    ok[j] = True
            yield frames, np.arange(start, stop, dtype=np.float64) / fps, ok
            start = stop


def _first_readable_shape(folder: Path, files: dict[int, Path], start: int, max_pixels: int) -> tuple[int, int]:
    for i in sorted(k for k in files if k > start):
        img, _ = read_image(files[i], max_pixels)
        if img is not None:
            return img.shape[:2]
    raise MediaError(folder, "no readable frame image")
