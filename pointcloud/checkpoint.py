"""Run-folder checkpoints in safetensors: model.safetensors (weights + spec), optimizer.safetensors (Adam state, RNG)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from affcli.common.runs import check_run_file
from affcli.common.checkpoint import CheckpointError, load_weights, read_checkpoint, write_checkpoint
from affcli.pointcloud.errors import PointCloudError, reading
from affcli.pointcloud.models import model_from_spec, model_spec

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"


@contextlib.contextmanager
def _as_pc_error() -> Iterator[None]:
    try:
        yield
    except CheckpointError as e:
        raise PointCloudError(str(e)) from None


def checked(path: str | os.PathLike) -> Path:
    """`path` of a run folder, or a one-line PointCloudError if it differs from the folder's checksums.json."""
    try:
        check_run_file(path)
    except ValueError as e:
        raise PointCloudError(str(e)) from None
    return Path(path)


def save_model(model: nn.Module, run_dir: str | os.PathLike) -> Path:
    """Write weights with the model spec in the safetensors metadata (atomic)."""
    return write_checkpoint(Path(run_dir) / MODEL_FILE, model.state_dict(), spec=model_spec(model))


def load_model(run: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Model rebuilt from a run folder (or a .safetensors file) written by save_model, in eval mode."""
    path = Path(run)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise PointCloudError(f"{path}: no trained model (run `affcli pc train` first)")
    checked(path)
    with _as_pc_error():
        meta, state = read_checkpoint(path, "spec")
    with reading(path, "model checkpoint (its spec does not build a model)"):
        model = model_from_spec(meta["spec"])
    with _as_pc_error():
        model = load_weights(model, state, path)
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise PointCloudError(f"{path}: model weights contain NaN or infinite values ({bad[0]}"
                              f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''})")
    return model.to(device).eval()


def restore_model(model: nn.Module, run_dir: str | os.PathLike) -> nn.Module:
    """Load the run folder's saved weights into `model` (resume), checked against the model's parameters."""
    path = checked(Path(run_dir) / MODEL_FILE)
    with _as_pc_error():
        return load_weights(model, read_checkpoint(path)[1], path)


def save_optimizer(opt: torch.optim.Optimizer, run_dir: str | os.PathLike, extra: dict[str, torch.Tensor]) -> Path:
    """Flatten the optimizer state to named tensors (plus `extra`, e.g. RNG states); hyper-parameters as metadata."""
    sd = opt.state_dict()
    tensors = {f"state.{pid}.{k}": torch.as_tensor(v) for pid, st in sd["state"].items() for k, v in st.items()}
    tensors |= {f"extra.{k}": v for k, v in extra.items()}
    return write_checkpoint(Path(run_dir) / OPTIM_FILE, tensors, param_groups=sd["param_groups"])


def load_optimizer(opt: torch.optim.Optimizer, run_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Restore state saved by save_optimizer into `opt`; returns the extra tensors."""
    with _as_pc_error():
        meta, flat = read_checkpoint(checked(Path(run_dir) / OPTIM_FILE), "param_groups")
    groups: list[dict[str, Any]] = meta["param_groups"]
    state: dict[int, dict[str, torch.Tensor]] = {}
    extra = {}
    for key, val in flat.items():
        kind, rest = key.split(".", 1)
        if kind == "extra":
            extra[rest] = val
        else:
            pid, name = rest.split(".", 1)
            state.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": groups})
    return extra
