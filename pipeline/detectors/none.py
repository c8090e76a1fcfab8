"""`--face none`: no detection; whole frames are letterboxed to the crop size (aspect kept, zero bars)."""
from __future__ import annotations

from typing import Any

from affcli.pipeline.detectors.registry import DETECTORS


@DETECTORS.register("none", landmarks=False, crop="letterbox",
                    help="no detection: whole frames letterboxed (aspect kept, zero bars), no face record")
def no_detector(device: Any, threads: int) -> None:
    """Nothing to build: the face stage letterboxes whole frames."""
    return None
