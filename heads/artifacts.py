"""Run-folder artifacts: safetensors checkpoint with its model spec, per-frame prediction tables."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from affcli.heads.model import HeadModel, ModelSpec

CHECKPOINT = "model.safetensors"


def save_checkpoint(path: str | Path, state: dict[str, torch.Tensor], spec: ModelSpec) -> Path:
    """Write the weights with the model spec as safetensors metadata (atomic rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp),
              metadata={"model_spec": json.dumps(spec.to_dict())})
    tmp.replace(path)
    return path


def load_model(run_dir: str | Path, device: torch.device | str = "cpu") -> HeadModel:
    """Rebuild a run's model from its checkpoint (spec from metadata) in eval mode."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint (is {run_dir} a finished train-head run?)")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "model_spec" not in meta:
        raise ValueError(f"{path}: checkpoint has no model_spec metadata")
    d = json.loads(meta["model_spec"])
    d["head_hidden"], d["temporal_on"] = tuple(d["head_hidden"]), tuple(d.get("temporal_on", ()))
    model = HeadModel(ModelSpec(**d))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()


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
