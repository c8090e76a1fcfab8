"""`--face mtcnn` (the default): MTCNN with facenet-pytorch's weights (pipeline/mtcnn.py), batched on the frames'
device, 5 landmarks; frames wider than `detect_width` are area-downscaled for detection (uint8 row strips, no float
copy of the whole frame) and the boxes / landmarks scaled back to frame pixels."""
from __future__ import annotations

from typing import Any

import torch

from affcli.pipeline.detectors.base import Detections, FaceDetector
from affcli.pipeline.detectors.registry import DETECTORS
from affcli.pipeline.mtcnn import MTCNN, MTCNN_PACKAGE, MTCNN_VERSION
from affcli.pipeline.strips import area_downscale


@DETECTORS.register("mtcnn", landmarks=True,
                    help="MTCNN (facenet-pytorch weights), batched on the device, 5 landmarks: aligned crops")
class MtcnnDetector(FaceDetector):
    """Largest face per frame by MTCNN.largest_face, with its 5 landmarks."""

    def __init__(self, device: str | torch.device, threads: int, min_face_size: float = 20.0,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 detect_width: int = 640):
        self.mtcnn = MTCNN(device, min_face_size=min_face_size, thresholds=tuple(thresholds), factor=factor)
        self.detect_width = int(detect_width)

    @classmethod
    def identity(cls) -> dict[str, Any]:
        return {"face_detector": f"mtcnn:{MTCNN_PACKAGE}=={MTCNN_VERSION}"}

    def __call__(self, frames: torch.Tensor) -> Detections:
        h, w = frames.shape[-2:]
        scale = min(1.0, self.detect_width / w)
        x = frames.to(self.mtcnn.device, non_blocking=True)
        if scale < 1.0:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = area_downscale(x, size).round_().clamp_(0, 255).to(torch.uint8)  # no whole-frame float copy
        f = self.mtcnn.largest_face(x)
        return Detections(f.boxes / scale, torch.nan_to_num(f.scores, nan=0.0), f.landmarks / scale, f.valid)
