"""Run-folder conventions shared by extract, train-head, ablate and pc: config/metrics JSON, hashes, seeds."""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np


def _default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + rename) so a kill never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by write_json."""
    return json.loads(Path(path).read_text())


def config_hash(cfg: dict[str, Any], n: int = 12) -> str:
    """Stable short hash of a config dict (key order does not matter)."""
    blob = json.dumps(cfg, sort_keys=True, default=_default).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) for deterministic runs."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
