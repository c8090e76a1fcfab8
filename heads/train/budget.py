"""Refuse, before anything is allocated, a run whose windows, batches or model cannot fit in the device's memory.

The estimate is a lower bound (what the window index arrays, one batch of gathered features and projections, and the
model with its gradients and AdamW state take at the least), so a refusal is certain and a run that fits is never
refused. The model is sized by building it on PyTorch's `meta` device, which allocates nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

WINDOW_BUILD_BYTES = 25
"""Bytes per window element while `make_windows` builds a split's windows (positions, clipped copy, int64 index,
bool mask)."""
WINDOW_KEEP_BYTES = 9
"""Bytes per window element a split's windows keep (int64 index + bool mask)."""
PARAM_BYTES = 20
"""Bytes per parameter in training: float32 weights, gradient, two AdamW moments and the best epoch's copy."""


class DoesNotFit(ValueError):
    """A run whose memory need (a lower bound) exceeds what the device has available; one line with the figures."""


def window_count(lengths: Sequence[int] | np.ndarray, window: int, stride: int, align: str = "start") -> int:
    """How many windows `heads.data.windows.make_windows` makes over videos of these lengths (no allocation)."""
    n = np.asarray(lengths, dtype=np.int64)
    n = n[n > 0]
    if align == "end":
        return int((-(-n // stride)).sum())
    return int(np.where(n > window, -(-(n - window) // stride) + 1, 1).sum())


def model_parameters(build: Callable[[], nn.Module]) -> int | None:
    """Parameter count of the module `build()` makes, built on the meta device (None if it cannot be built there)."""
    try:
        with torch.device("meta"):
            return sum(p.numel() for p in build().parameters())
    except Exception:  # a part that cannot be built on meta is sized by its real build
        return None


def available_bytes(device: torch.device) -> int:
    """Free memory of `device`: CUDA's free bytes, else the host's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        with open("/proc/meminfo") as f:
            info = {k: v for k, v in (line.split(":", 1) for line in f)}
        return int(info["MemAvailable"].split()[0]) * 1024


def gib(n: float) -> str:
    """Bytes as GiB (or MiB below one GiB), for one-line messages."""
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def check_fits(what: str, need: dict[str, int], device: torch.device, hint: str) -> None:
    """DoesNotFit naming each part of `need` (bytes) when their sum exceeds the device's available memory."""
    total = sum(need.values())
    free = available_bytes(device)
    if total <= free:
        return
    parts = ", ".join(f"{k} {gib(v)}" for k, v in need.items() if v)
    raise DoesNotFit(f"{what} needs at least {gib(total)} ({parts}) but {device.type} has {gib(free)} available; "
                     f"{hint}")


def run_need(lengths: dict[str, np.ndarray], window: int, stride: int, eval_stride: int, batch_size: int,
             in_width: int, d_model: int, n_modalities: int, params: int | None, last: bool,
             elem_bytes: int = 4) -> dict[str, int]:
    """Lower-bound bytes of a head run: train windows kept while val windows are built, one batch of gathered
    features and their projections (forward and backward), the model's training state."""
    align, ev_stride = ("end", 1) if last else ("start", eval_stride)
    n_train = window_count(lengths.get("train", []), window, stride, align)
    n_eval = window_count(lengths.get("eval", []), window, ev_stride, align)
    windows = max(n_train * window * WINDOW_BUILD_BYTES,
                  n_train * window * WINDOW_KEEP_BYTES + n_eval * window * WINDOW_BUILD_BYTES)
    rows = max(1, min(batch_size, max(n_train, 1))) * window
    batch = rows * (2 * in_width + 2 * d_model * n_modalities) * elem_bytes
    return {"windows": windows, "one batch": batch, "model": (params or 0) * PARAM_BYTES}


def check_run_fits(cfg, data) -> None:
    """Refuse a train-head run (RunConfig, loaded Data) whose windows, batch or model cannot fit, before windows or
    model are allocated."""
    from affcli.heads.model.head import HeadModel

    params = model_parameters(lambda: HeadModel(cfg.model, cfg.task, data.in_dims))
    lengths = {"train": data.split_rows(cfg.splits[0])[1], "eval": data.split_rows(cfg.splits[1])[1]}
    elem = 2 if data.device.type == "cuda" else 4
    need = run_need(lengths, cfg.window, cfg.stride, cfg.eval_stride or max(1, cfg.window // 2), cfg.batch_size,
                    sum(data.in_dims.values()), cfg.model.d_model, len(data.in_dims), params,
                    cfg.model.label_position == "last", elem)
    check_fits(f"train-head (window {cfg.window}, batch {cfg.batch_size})", need, data.device,
               "lower --window or --batch-size, or the model's widths")


def check_pretrain_fits(model_spec, task: str, in_dims: dict[str, int], lengths: np.ndarray, window: int, stride: int,
                        batch_size: int, device: torch.device) -> None:
    """Refuse a pretraining run whose windows, batch (two views) or encoder (built for `task`) cannot fit, before
    they are allocated."""
    from affcli.heads.model.head import HeadModel

    params = model_parameters(lambda: HeadModel(model_spec, task, in_dims))
    need = run_need({"train": lengths}, window, stride, stride, 2 * batch_size, sum(in_dims.values()),
                    model_spec.d_model, len(in_dims), params, False, 2 if device.type == "cuda" else 4)
    check_fits(f"pretrain (window {window}, batch {batch_size})", need, device,
               "lower --window or --batch-size, or the model's widths")
