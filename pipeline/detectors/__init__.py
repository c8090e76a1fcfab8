"""Face detectors, picked by name (`--face NAME`): one module per detector under `@DETECTORS.register`, imported
below. Each declares whether it gives landmarks and how it crops; `CropSettings` (pipeline/crop_settings.py)
builds it from a name or from a cache's crop fingerprint.
"""
from __future__ import annotations

from affcli.pipeline.detectors.base import Detections, FaceDetector, from_boxes
from affcli.pipeline.detectors.registry import DETECTORS
from affcli.pipeline.detectors import haar, mtcnn, none  # noqa: F401,E402  (each module registers its detector)

__all__ = ["DETECTORS", "Detections", "FaceDetector", "from_boxes"]
