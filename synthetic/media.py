"""Synthetic media with real signal: test videos (clicks, noise, truncation) and an Aff-Wild2-format demo set.

The demo face is the astronaut photo shipped inside scikit-image (a real face the Haar cascade finds);
without scikit-image a drawn face is used instead, which the cascade does not reliably find.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np

from affcli.common.vocab import AU_NAMES
from affcli.synthetic.labels import write_label_file

# Typical (valence, arousal) and prototype AUs per expression class (FACS prototypes restricted to the 12 AUs).
_CLASS_VA = np.array(
    [[0.0, 0.0], [-0.6, 0.7], [-0.6, 0.3], [-0.5, 0.6], [0.7, 0.4], [-0.6, -0.4], [0.3, 0.7], [0.1, -0.2]],
    np.float32,
)
_CLASS_AUS = (
    (),
    ("AU4", "AU7", "AU23", "AU24"),
    ("AU4", "AU10", "AU15"),
    ("AU1", "AU2", "AU4", "AU7", "AU25"),
    ("AU6", "AU12", "AU25"),
    ("AU1", "AU4", "AU15"),
    ("AU1", "AU2", "AU25", "AU26"),
    ("AU10",),
)
# Face tint per class (RGB gains) and tone pitch per class (half-octave steps from 220 Hz).
CLASS_TINT = np.array(
    [[1, 1, 1], [1, 0.55, 0.55], [0.6, 1, 0.55], [0.7, 0.6, 1], [1, 1, 0.5], [0.55, 0.7, 1], [1, 0.6, 1], [0.6, 1, 1]],
    np.float32,
)
CLASS_PITCH = 220.0 * 2.0 ** (np.arange(8) / 2.0)

Picture = Literal["face", "noise", "blank"]


@dataclass
class DemoDataset:
    """Where make_demo_dataset wrote things and what it wrote."""

    root: Path
    video_dir: Path
    label_root: Path
    video_ids: list[str]
    splits: dict[str, str]
    fps: float
    n_frames: dict[str, int]
    no_face: dict[str, tuple[int, int]] = field(default_factory=dict)


def face_patch() -> np.ndarray:
    """A square RGB face image (real photo when scikit-image is installed) used to draw detectable faces."""
    return _face_patch().copy()


@functools.lru_cache(maxsize=1)
def _face_patch() -> np.ndarray:
    try:
        from skimage.data import astronaut
    except ImportError:
        return _drawn_face()
    cx, cy, half = 224, 118, 75
    return np.ascontiguousarray(astronaut()[cy - half : cy + half, cx - half : cx + half])


def _drawn_face(side: int = 150) -> np.ndarray:
    img = np.full((side, side, 3), 60, np.uint8)
    c = side // 2
    cv2.ellipse(img, (c, c), (int(side * 0.33), int(side * 0.43)), 0, 0, 360, (225, 185, 160), -1)
    for dx in (-1, 1):
        cv2.ellipse(img, (c + dx * side // 7, int(side * 0.40)), (side // 14, side // 28), 0, 0, 360, (40, 30, 30), -1)
        cv2.line(
            img,
            (c + dx * side // 7 - side // 12, int(side * 0.32)),
            (c + dx * side // 7 + side // 12, int(side * 0.32)),
            (70, 50, 40),
            3,
        )
    cv2.line(img, (c, int(side * 0.45)), (c, int(side * 0.6)), (150, 110, 100), 2)
    cv2.ellipse(img, (c, int(side * 0.70)), (side // 8, side // 24), 0, 0, 360, (120, 40, 50), -1)
    return img


def _soft_mask(side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    r = np.hypot((xx - (side - 1) / 2) / (side * 0.46), (yy - (side - 1) / 2) / (side * 0.5))
    return np.clip((1.0 - r) * 8.0, 0.0, 1.0)[..., None]


def smooth_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A float32 [H,W,3] background of smooth random colour blobs (static clutter around the face)."""
    coarse = rng.uniform(40, 200, (6, 8, 3)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255)


def render_faces(
    background: np.ndarray,
    centres: np.ndarray,
    sides: np.ndarray,
    tints: np.ndarray,
    gains: np.ndarray,
    present: np.ndarray,
) -> np.ndarray:
    """Frames uint8 [N,H,W,3]: the face patch at `centres` [N,2], `sides` [N] px wide, tinted and brightened."""
    base = face_patch().astype(np.float32)
    h, w = background.shape[:2]
    out = np.broadcast_to(background, (len(sides), h, w, 3)).copy()
    for i in np.flatnonzero(present):
        s = int(sides[i])
        patch = cv2.resize(base, (s, s), interpolation=cv2.INTER_AREA) * (tints[i] * gains[i])
        x0, y0 = int(round(centres[i, 0] - s / 2)), int(round(centres[i, 1] - s / 2))
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
        if fx1 <= fx0 or fy1 <= fy0:
            continue
        m = _soft_mask(s)[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
        p = patch[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
        region = out[i, fy0:fy1, fx0:fx1]
        region[:] = region * (1 - m) + p * m
    return out.clip(0, 255).astype(np.uint8)


def write_video(
    path: Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    faststart: bool = False,
    audio_start: float = 0.0,
) -> Path:
    """Encode RGB frames [N,H,W,3] (even H, W) as h264 (+ mono AAC when `audio` is given) into `path`.

    `audio_start` delays the audio stream's first sample to that time (seconds) on the video clock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        raise ValueError(f"frame size must be even for yuv420p, got {w}x{h}")
    rate = Fraction(fps).limit_denominator(1001)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        vs = container.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "18"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = container.add_stream("aac", rate=sample_rate, layout="mono") if audio is not None else None
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            container.mux(vs.encode(frame))
        container.mux(vs.encode())
        if aus is not None:
            samples = np.asarray(audio, np.float32).reshape(-1)
            step, offset = 1024, int(round(audio_start * sample_rate))
            for s in range(0, len(samples), step):
                af = av.AudioFrame.from_ndarray(samples[None, s : s + step], format="flt", layout="mono")
                af.sample_rate, af.pts, af.time_base = sample_rate, s + offset, Fraction(1, sample_rate)
                container.mux(aus.encode(af))
            container.mux(aus.encode())
    return path


def write_test_video(
    path: Path,
    n_frames: int,
    fps: float,
    size: tuple[int, int] = (160, 120),
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    picture: Picture = "face",
    seed: int = 0,
    faststart: bool = False,
) -> Path:
    """A small h264 mp4 (size = (width, height)): a moving face, noise or blank grey picture, optional audio."""
    w, h = size
    rng = np.random.default_rng(seed)
    if picture == "noise":
        frames = rng.integers(0, 256, (n_frames, h, w, 3), dtype=np.uint8)
    elif picture == "blank":
        frames = np.full((n_frames, h, w, 3), 128, np.uint8)
    elif picture == "face":
        t = np.arange(n_frames) / fps
        side = int(min(w, h) * 0.6)
        centres = np.stack(
            [w / 2 + 0.1 * w * np.sin(2 * np.pi * t / 3), h / 2 + 0.05 * h * np.cos(2 * np.pi * t / 2)], 1
        )
        ones = np.ones(n_frames, np.float32)
        frames = render_faces(
            smooth_background(rng, w, h), centres, ones * side, np.ones((n_frames, 3), np.float32), ones, ones > 0
        )
    else:
        raise ValueError(f"picture must be face, noise or blank, got {picture!r}")
    return write_video(path, frames, fps, audio, sample_rate, faststart)


def click_track(
    seconds: float, click_times: float | list[float], sample_rate: int = 16000, amplitude: float = 0.9
) -> np.ndarray:
    """Silence of `seconds` with a 0.5 ms impulse starting at each click time (for audio/video alignment tests)."""
    audio = np.zeros(int(round(seconds * sample_rate)), np.float32)
    width = max(1, int(round(0.0005 * sample_rate)))
    for t in np.atleast_1d(click_times):
        i = int(round(float(t) * sample_rate))
        audio[i : i + width] = amplitude
    return audio


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """Copy the first `keep` fraction of the bytes of `src` to `dst`, as a cut-off download would leave it."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


def corrupted_copy(src: Path, dst: Path, at: float = 0.5, n_bytes: int = 20000) -> Path:
    """Copy `src` to `dst` with `n_bytes` zeroed from the `at` fraction of the file on (a damaged middle)."""
    data = bytearray(Path(src).read_bytes())
    start = int(len(data) * at)
    data[start : start + n_bytes] = bytes(len(data[start : start + n_bytes]))
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def write_not_a_video(path: Path) -> Path:
    """A text file with a video extension."""
    Path(path).write_text("this is not a video\n")
    return Path(path)


def _segments(rng: np.random.Generator, n: int, fps: float) -> list[tuple[int, int]]:
    bounds, start = [], 0
    while start < n:
        stop = min(n, start + int(round(fps * rng.uniform(1.0, 2.0))))
        bounds.append((start, stop))
        start = stop
    return bounds


def _labels(rng: np.random.Generator, n: int, fps: float, class_stream: list[int]):
    expr = np.empty(n, np.int64)
    va = np.empty((n, 2), np.float32)
    aus = np.zeros((n, len(AU_NAMES)), np.int64)
    t = np.arange(n) / fps
    for start, stop in _segments(rng, n, fps):
        c = class_stream.pop(0) if class_stream else int(rng.integers(8))
        expr[start:stop] = c
        centre = np.clip(_CLASS_VA[c] + rng.normal(0, 0.15, 2), -0.9, 0.9)
        drift = 0.08 * np.sin(2 * np.pi * t[start:stop, None] / 1.7 + rng.uniform(0, 6.28, 2))
        va[start:stop] = np.clip(centre + drift, -1, 1)
        bits = np.isin(AU_NAMES, _CLASS_AUS[c]).astype(np.int64)
        if rng.random() < 0.3:
            bits[rng.integers(len(AU_NAMES))] ^= 1
        aus[start:stop] = bits
    return expr, va, aus


def _audio_for(rng: np.random.Generator, expr: np.ndarray, va: np.ndarray, fps: float, sample_rate: int) -> np.ndarray:
    n_samples = int(round(len(expr) / fps * sample_rate))
    frame_of = np.minimum((np.arange(n_samples) / sample_rate * fps).astype(np.int64), len(expr) - 1)
    pitch = CLASS_PITCH[expr[frame_of]]
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    valence, arousal = va[frame_of, 0], va[frame_of, 1]
    amp = 0.08 + 0.22 * (valence + 1) / 2
    noise = (0.02 + 0.15 * (arousal + 1) / 2) * rng.standard_normal(n_samples)
    return np.clip(amp * (np.sin(phase) + 0.3 * np.sin(2 * phase)) + noise, -1, 1).astype(np.float32)


def _picture_for(
    rng: np.random.Generator,
    expr: np.ndarray,
    va: np.ndarray,
    fps: float,
    size: tuple[int, int],
    gap: tuple[int, int] | None,
) -> np.ndarray:
    w, h = size
    n = len(expr)
    t = np.arange(n) / fps
    base = min(w, h) * 0.5
    sides = np.round(base * (1.0 + 0.25 * va[:, 1])).astype(np.int64)
    phase = rng.uniform(0, 2 * np.pi, 2)
    reach = np.array([w, h]) / 2 - sides.max() / 2 - 2
    centres = np.stack(
        [
            w / 2 + reach[0] * 0.8 * np.sin(2 * np.pi * t / 5.3 + phase[0]),
            h / 2 + reach[1] * 0.8 * np.sin(2 * np.pi * t / 3.7 + phase[1]),
        ],
        1,
    )
    gains = 0.8 + 0.25 * va[:, 0]
    present = np.ones(n, bool)
    if gap is not None:
        present[gap[0] : gap[1]] = False
    return render_faces(smooth_background(rng, w, h), centres, sides, CLASS_TINT[expr], gains, present)


def make_demo_dataset(
    root: Path,
    n_videos: int = 6,
    seconds: float = 8.0,
    fps: float = 25.0,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
    sample_rate: int = 16000,
) -> DemoDataset:
    """Write `n_videos` mp4s whose face picture and audio tone both follow per-frame EXPR/VA/AU labels, plus the labels.

    Picture: tint <- expression class, brightness <- valence, face size <- arousal; the face moves over a
    static background; the first video has a one-second stretch without a face (labels still present).
    Audio: tone pitch <- class, loudness <- valence, noise level <- arousal. About 2/3 of the videos are train.
    """
    root = Path(root)
    if n_videos < 1:
        raise ValueError("n_videos must be >= 1")
    rng = np.random.default_rng(seed)
    video_dir, label_root = root / "videos", root / "labels"
    ids = [f"demo{i:02d}" for i in range(n_videos)]
    n_train = max(1, round(n_videos * 2 / 3)) if n_videos > 1 else 1
    order = rng.permutation(n_videos)
    splits = {ids[i]: ("train" if rank < n_train else "val") for rank, i in enumerate(order)}
    n = max(1, int(round(seconds * fps)))
    class_stream = [int(c) for _ in range(n_videos * math.ceil(seconds) + 8) for c in rng.permutation(8)]
    no_face: dict[str, tuple[int, int]] = {}
    for k, vid in enumerate(ids):
        vrng = np.random.default_rng([seed, k])
        expr, va, aus = _labels(vrng, n, fps, class_stream)
        gap = None
        if k == 0 and n >= 3:
            start = n // 3
            gap = (start, min(n, start + max(1, int(round(fps)))))
            no_face[vid] = gap
        frames = _picture_for(vrng, expr, va, fps, size, gap)
        audio = _audio_for(vrng, expr, va, fps, sample_rate)
        write_video(video_dir / f"{vid}.mp4", frames, fps, audio, sample_rate)
        for task, values in (("expr", expr), ("va", va), ("au", aus)):
            write_label_file(label_root, task, splits[vid], vid, values)
    return DemoDataset(
        root=root,
        video_dir=video_dir,
        label_root=label_root,
        video_ids=ids,
        splits=splits,
        fps=float(fps),
        n_frames={vid: n for vid in ids},
        no_face=no_face,
    )
