"""Device choice of the point-cloud path (train, upsample and eval), with an unavailable CUDA as a PointCloudError."""

from __future__ import annotations

import torch

from affcli.common.device import resolve_device as _resolve_device
from affcli.pointcloud.errors import PointCloudError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """common.device.resolve_device, with an unavailable CUDA reported as a PointCloudError."""
    try:
        return _resolve_device(device)
    except ValueError as e:
        raise PointCloudError(str(e)) from None
