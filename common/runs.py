"""Run-folder conventions shared by extract, train-head, ablate and pc: config/metrics JSON, hashes, seeds, and the
checksums of a finished run's files (checksums.json), which readers check."""
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


CHECKSUMS = "checksums.json"
"""Written last into a finished run folder: the SHA-256 of each file the run wrote, which readers check."""


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder: str | os.PathLike, names: list[str]) -> None:
    """Record the SHA-256 of the run files `names` (those present) in `folder/checksums.json`, after they are written."""
    folder = Path(folder)
    write_json(folder / CHECKSUMS, {"sha256": {n: file_sha256(folder / n) for n in names if (folder / n).is_file()}})


def check_run_file(path: str | os.PathLike) -> None:
    """ValueError (one line) if `path` differs from the checksum its run folder recorded for it; nothing to check in a
    folder without checksums.json (runs written before it) or for a file it does not list."""
    path = Path(path)
    record = path.parent / CHECKSUMS
    if not record.exists():
        return
    try:
        want = read_json(record)["sha256"].get(path.name)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{record}: unreadable ({type(e).__name__}); the run folder's checksums are damaged") from None
    if want is not None and (not path.is_file() or file_sha256(path) != want):
        raise ValueError(f"{path}: changed after the run was written (its SHA-256 differs from {CHECKSUMS}); "
                         f"restore it or train the run again")


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
