"""Media-layer throughput: PyAV decode frames/s on a 640x360 5 s clip (per thread mode) and Haar face detection +
box crop frames/s (the `--face haar` path of extract: HaarDetector, then `face_crops` on the CPU).

Usage: python bench/bench_media.py [--out bench/results/media.json]. Writes the clips to a temp folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from affcli.pipeline.crops import face_crops
from affcli.pipeline.detectors import DETECTORS
from affcli.pipeline.media import iter_video_frames
from affcli.synthetic.media import render_faces, smooth_background, write_video


def make_clip(path: Path, noise_sigma: float, seconds: float = 5.0, fps: float = 25.0) -> Path:
    """A 640x360 clip: a moving real face over a smooth background, plus per-frame sensor-like noise."""
    rng = np.random.default_rng(0)
    n, w, h = int(seconds * fps), 640, 360
    t = np.arange(n) / fps
    centres = np.stack([w / 2 + 150 * np.sin(2 * np.pi * t / 4), h / 2 + 40 * np.sin(2 * np.pi * t / 3)], 1)
    ones = np.ones(n, np.float32)
    frames = render_faces(
        smooth_background(rng, w, h), centres, ones * 160, np.ones((n, 3), np.float32), ones, ones > 0
    )
    if noise_sigma:
        frames = np.clip(frames + rng.normal(0, noise_sigma, frames.shape), 0, 255).astype(np.uint8)
    return write_video(path, frames, fps)


def decode_fps(path: Path, thread_type: str, repeats: int = 3) -> float:
    best = 0.0
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        for frames, _ in iter_video_frames(path, batch_size=64, thread_type=thread_type):
            n += len(frames)
        best = max(best, n / (time.perf_counter() - start))
    return best


def crop_fps(frames: np.ndarray, threads: int, repeats: int = 3) -> tuple[float, float]:
    """Best frames/s of Haar detection (at 320 px wide) + 224 px box crops of a batch, and the face-found fraction."""
    detector = DETECTORS.build("haar", "cpu", threads)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    best, valid = 0.0, 0.0
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            d = detector(x)
            face_crops(x, d.boxes, d.landmarks, d.valid, 224, align=False, margin=0.25)
            best = max(best, len(frames) / (time.perf_counter() - start))
            valid = float(d.valid.float().mean())
    finally:
        detector.close()
    return best, valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg(), "python": platform.python_version()},
        "versions": {"av": av.__version__, "opencv": cv2.__version__, "numpy": np.__version__},
        "decode_fps": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, sigma in (("smooth", 0.0), ("noisy", 8.0)):
            clip = make_clip(Path(tmp) / f"{name}.mp4", sigma)
            results["decode_fps"][name] = {m: round(decode_fps(clip, m), 1) for m in ("AUTO", "SLICE", "FRAME", "NONE")}
        frames = next(iter_video_frames(Path(tmp) / "noisy.mp4", batch_size=64))[0]
    for threads in (1, 2):
        fps, valid = crop_fps(frames, threads)
        results[f"face_crop_fps_batch64_threads{threads}"] = round(fps, 1)
        results["face_crop_valid_fraction"] = round(valid, 3)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
