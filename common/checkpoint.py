"""Safetensors checkpoints with JSON metadata (a model's spec, optimizer groups), shared by heads and pointcloud.

Writes are atomic (temp file + rename); every read problem is one CheckpointError line naming the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, lacks its metadata or does not fit its model; str is `<path>: <problem>`."""

    def __init__(self, path: str | Path, message: str):
        self.path, self.message = str(path), " ".join(str(message).split())
        super().__init__(f"{self.path}: {self.message}")

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def write_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], **meta: Any) -> Path:
    """Write named tensors (moved to CPU) with each `meta` value JSON-encoded in the safetensors header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={k: json.dumps(v) for k, v in meta.items()})
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path, *keys: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON-decoded metadata `keys` (all required) and the tensors of a file written by write_checkpoint."""
    path = Path(path)
    try:
        with safe_open(str(path), "pt") as fh:
            raw = fh.metadata() or {}
        missing = [k for k in keys if k not in raw]
        if missing:
            raise CheckpointError(path, f"not a checkpoint of this kind (no {', '.join(missing)} in its metadata)")
        meta = {k: json.loads(raw[k]) for k in keys}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"unreadable checkpoint ({e})") from None
    return meta, tensors


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> nn.Module:
    """`module.load_state_dict(tensors)` with a mismatch (missing/unexpected keys, wrong shapes) as one CheckpointError."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise CheckpointError(path, f"weights do not fit the model in its spec ({detail[:300]})") from None
    return module
