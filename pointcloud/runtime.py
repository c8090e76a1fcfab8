"""Device choice, mixed precision and progress bars shared by train, upsample and eval."""

from __future__ import annotations

import contextlib

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pointcloud.errors import PointCloudError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto'/None -> cuda if available else cpu; an unavailable CUDA request is a one-line error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PointCloudError(f"device {device!r} requested but CUDA is not available")
    return dev


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
