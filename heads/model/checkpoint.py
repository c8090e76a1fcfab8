"""A run's checkpoint: safetensors weights with the model's record (task, input widths, spec) as metadata."""
from __future__ import annotations

from pathlib import Path

import torch

from affcli.common.checkpoint import load_weights, read_checkpoint, write_checkpoint
from affcli.common.runs import check_run_file
from affcli.heads.model.head import HeadModel

CHECKPOINT = "model.safetensors"


def save_checkpoint(path: str | Path, state: dict[str, torch.Tensor], model: HeadModel) -> Path:
    """Write the weights with the model's record (task, input widths, spec) as safetensors metadata (atomic rename)."""
    return write_checkpoint(path, state, model_spec=model.record())


def load_model(run_dir: str | Path, device: torch.device | str = "cpu") -> HeadModel:
    """Rebuild a run's model from its checkpoint (spec from metadata) in eval mode."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint (is {run_dir} a finished train-head run?)")
    meta, state = read_checkpoint(path, "model_spec")
    check_run_file(path)
    return load_weights(HeadModel.from_record(meta["model_spec"]), state, path).to(device).eval()
