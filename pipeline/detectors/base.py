"""What a face detector gives: the largest face of each frame of a batch, on any device (the tracker moves it)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np
import torch


class Detections(NamedTuple):
    """The largest face per frame: boxes [M,4] (x0, y0, x1, y1 frame pixels), scores [M], landmarks [M,5,2] (eyes,
    nose, mouth corners; NaN for a detector without landmarks), valid [M] bool; NaN boxes where `valid` is False."""

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor
    valid: torch.Tensor


class FaceDetector(ABC):
    """A registered face detector: frames [M,3,H,W] uint8 -> Detections of the largest face per frame."""

    @classmethod
    def identity(cls) -> dict[str, Any]:
        """The model / library version behind the detections (recorded in the crop fingerprint beside the options)."""
        return {}

    @abstractmethod
    def __call__(self, frames: torch.Tensor) -> Detections:
        """Frames [M,3,H,W] uint8 on any device -> the largest face of each."""


def from_boxes(found: list[np.ndarray | None]) -> Detections:
    """Detections of a box-only detector from one box (x0, y0, x1, y1) or None per frame: score 1 where found."""
    boxes = np.stack([np.full(4, np.nan, np.float32) if b is None else np.asarray(b, np.float32) for b in found]) \
        if found else np.zeros((0, 4), np.float32)
    valid = torch.from_numpy(np.isfinite(boxes).all(1))
    return Detections(torch.from_numpy(boxes), valid.float(), torch.full((len(boxes), 5, 2), float("nan")), valid)
