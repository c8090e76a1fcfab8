"""Device choice shared by every stage: 'auto' means CUDA when present, and an absent CUDA is a clear error."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' / None / '' -> cuda if available else cpu; asking for CUDA without one raises ValueError."""
    if device is None or str(device) in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
    return dev
