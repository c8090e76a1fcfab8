"""`--face haar`: OpenCV's bundled Haar cascade on the host, the largest face per frame, boxes only (no landmarks).

Detection runs on a grey copy downscaled to `detect_width` (never upscaled), min face `max(20 px, min_face * short
side)`; the frames of a batch are detected in a thread pool (OpenCV releases the GIL; one classifier per thread).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from affcli.pipeline.detectors.base import Detections, FaceDetector, from_boxes
from affcli.pipeline.detectors.registry import DETECTORS

CASCADE = "haarcascade_frontalface_default.xml"


@DETECTORS.register("haar", landmarks=False, help="OpenCV's Haar cascade on the host, boxes only: square box crops")
class HaarDetector(FaceDetector):
    """Largest frontal face per frame by the Haar cascade; score 1 where found."""

    def __init__(self, device: Any, threads: int, detect_width: int = 320, min_face: float = 0.08,
                 scale_factor: float = 1.1, min_neighbors: int = 5):
        if detect_width < 32 or not 0 <= min_face < 1 or threads < 1 or scale_factor <= 1 or min_neighbors < 0:
            raise ValueError(f"haar: bad options detect_width={detect_width} min_face={min_face} threads={threads} "
                             f"scale_factor={scale_factor} min_neighbors={min_neighbors}")
        self.detect_width, self.min_face = int(detect_width), float(min_face)
        self.scale_factor, self.min_neighbors, self.threads = float(scale_factor), int(min_neighbors), int(threads)
        self._cascade_path = str(Path(cv2.data.haarcascades) / CASCADE)
        if cv2.CascadeClassifier(self._cascade_path).empty():
            raise RuntimeError(f"{self._cascade_path}: OpenCV could not load its bundled Haar cascade")
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def identity(cls) -> dict[str, Any]:
        return {"face_detector": f"opencv-haar:{CASCADE}", "opencv": cv2.__version__}

    def _classifier(self) -> cv2.CascadeClassifier:
        clf = getattr(self._local, "clf", None)
        if clf is None:
            clf = self._local.clf = cv2.CascadeClassifier(self._cascade_path)
        return clf

    def detect(self, frame: np.ndarray) -> np.ndarray | None:
        """Largest face box (x0, y0, x1, y1) in pixels of `frame` (uint8 RGB [H,W,3]), or None."""
        h, w = frame.shape[:2]
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.detect_width / w)
        if scale < 1.0:
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        min_side = max(20, int(self.min_face * min(grey.shape)))
        found = self._classifier().detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
        if len(found) == 0:
            return None
        x, y, bw, bh = np.asarray(found, np.float32)[np.argmax(found[:, 2] * found[:, 3])]
        return np.array([x, y, x + bw, y + bh], np.float32) / scale

    def __call__(self, frames: torch.Tensor) -> Detections:
        host = np.ascontiguousarray(frames.permute(0, 2, 3, 1).cpu().numpy())
        if self.threads > 1 and len(host) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="haar")
            return from_boxes(list(self._pool.map(self.detect, host)))
        return from_boxes([self.detect(f) for f in host])

    def close(self) -> None:
        """Stop the worker threads (also done when the detector is garbage-collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_local"], state["_pool"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
