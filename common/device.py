"""Device choice and mixed precision shared by every stage: 'auto' means CUDA when present, and an absent CUDA is a clear error."""
from __future__ import annotations

import contextlib

import torch

from affcli.common.checks import check_device


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' / None / '' -> cuda if available else cpu; asking for CUDA without one raises ValueError."""
    if device is None or str(device) in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):
        check_device(device)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
    return dev


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (fp16 where bf16 is unsupported) when enabled; a no-op on CPU or when disabled."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return contextlib.nullcontext()
