"""Run-folder checkpoints in safetensors: model.safetensors (weights + spec), optimizer.safetensors (Adam state, RNG)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from affcli.pointcloud.errors import PointCloudError
from affcli.pointcloud.models import model_from_spec, model_spec

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"


def _save(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def save_model(model: nn.Module, run_dir: str | os.PathLike) -> Path:
    """Write weights with the model spec in the safetensors metadata (atomic)."""
    path = Path(run_dir) / MODEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(model.state_dict(), path, {"spec": json.dumps(model_spec(model))})
    return path


def load_model(run: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Model rebuilt from a run folder (or a .safetensors file) written by save_model, in eval mode."""
    path = Path(run)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise PointCloudError(f"{path}: no trained model (run `affcli pc train` first)")
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    if "spec" not in meta:
        raise PointCloudError(f"{path}: not an affcli point-cloud model (no spec in metadata)")
    model = model_from_spec(json.loads(meta["spec"]))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()


def save_optimizer(opt: torch.optim.Optimizer, run_dir: str | os.PathLike, extra: dict[str, torch.Tensor]) -> Path:
    """Flatten the optimizer state to named tensors (plus `extra`, e.g. RNG states); hyper-parameters as metadata."""
    sd = opt.state_dict()
    tensors = {f"state.{pid}.{k}": torch.as_tensor(v) for pid, st in sd["state"].items() for k, v in st.items()}
    tensors |= {f"extra.{k}": v for k, v in extra.items()}
    path = Path(run_dir) / OPTIM_FILE
    _save(tensors, path, {"param_groups": json.dumps(sd["param_groups"])})
    return path


def load_optimizer(opt: torch.optim.Optimizer, run_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Restore state saved by save_optimizer into `opt`; returns the extra tensors."""
    path = Path(run_dir) / OPTIM_FILE
    with safe_open(str(path), "pt") as fh:
        groups: list[dict[str, Any]] = json.loads((fh.metadata() or {})["param_groups"])
    flat = load_file(str(path))
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
