"""Run-folder artifacts: safetensors checkpoint with its model spec, per-frame prediction tables."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from affcli.common.checkpoint import load_weights, read_checkpoint, write_checkpoint
from affcli.heads.model import HeadModel

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
    return load_weights(HeadModel.from_record(meta["model_spec"]), state, path).to(device).eval()


def prediction_frame(videos: list[str], starts: np.ndarray, rows: np.ndarray, preds: dict[str, np.ndarray],
                     labels: dict[str, np.ndarray] | None = None) -> "pl.DataFrame":
    """One row per frame: video, frame (1-based), predicted probabilities/values and, if given, labels and masks."""
    import polars as pl

    vid_of = np.searchsorted(starts, rows, side="right") - 1
    cols: dict[str, object] = {"video": [videos[i] for i in vid_of], "frame": (rows - starts[vid_of] + 1).astype(np.int64)}
    for k, p in preds.items():
        for j in range(p.shape[1]):
            cols[f"{k}_{j}"] = p[:, j].astype(np.float32)
    for k, v in (labels or {}).items():
        v = np.asarray(v)
        if v.ndim == 1:
            cols[f"label_{k}" if not k.startswith("mask_") else k] = v
        else:
            for j in range(v.shape[1]):
                cols[f"label_{k}_{j}" if not k.startswith("mask_") else f"{k}_{j}"] = v[:, j]
    return pl.DataFrame(cols)
