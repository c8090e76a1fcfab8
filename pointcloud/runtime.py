"""Device choice, mixed precision and progress bars shared by train, upsample and eval."""

from __future__ import annotations

import contextlib

import torch

from affcli.common.device import resolve_device as _resolve_device
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from affcli.pointcloud.errors import PointCloudError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """common.device.resolve_device, with an unavailable CUDA reported as a PointCloudError."""
    try:
        return _resolve_device(device)
    except ValueError as e:
        raise PointCloudError(str(e)) from None


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed), a no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def progress(**kwargs) -> Progress:
    """Rich progress bar with count, elapsed time, ETA and a free `info` field."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        **kwargs,
    )
