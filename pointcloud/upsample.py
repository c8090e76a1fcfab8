"""Whole-cloud upsampling with a patch network: FPS seeds, kNN patches, batched inference, merge to exactly r N points."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from affcli.common.device import autocast
from affcli.pointcloud.errors import PointCloudError
from affcli.pointcloud.merge import blocked_fps_merge
from affcli.pointcloud.ops import farthest_point_sample, gather_points, knn, normalize_unit_sphere
from affcli.pointcloud.runtime import resolve_device

PATCH = 256
SEED_FACTOR = 3
MIN_POINTS = 16
BLOCKED_MAX = 1 << 20  # 'auto' merges by inner blocked FPS up to this many output points, by child assignment above
KEEP_LOGIT = 0.0  # merge candidates whose keep-head logit is below this are dropped first (probability 0.5)
INNER = 0.7  # 'inner' merge: children of the nearest INNER x PATCH points of each patch's seed are candidates
MAX_RATIO = 256.0
Merge = Literal["auto", "inner", "blocked", "fps", "assign"]
DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "pu_mfa_x4.safetensors"


def check_cloud(xyz: Tensor | np.ndarray, name: str = "input cloud") -> Tensor:
    """[N,3] float32 tensor, or a one-line PointCloudError for a wrong shape, an empty cloud or NaNs."""
    t = torch.as_tensor(np.asarray(xyz) if not isinstance(xyz, Tensor) else xyz).float()
    if t.ndim != 2 or t.shape[-1] != 3:
        raise PointCloudError(f"{name}: expected [N,3] points, got shape {list(t.shape)}")
    if t.shape[0] == 0:
        raise PointCloudError(f"{name}: empty point cloud")
    if not torch.isfinite(t).all():
        raise PointCloudError(f"{name}: contains NaN or infinite coordinates")
    if t.shape[0] < MIN_POINTS:
        raise PointCloudError(f"{name}: {t.shape[0]} points; need at least {MIN_POINTS} to upsample")
    return t


def check_ratio(ratio: float) -> float:
    """`ratio` as a float if it is a finite number in (1, MAX_RATIO], else a one-line PointCloudError."""
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise PointCloudError(f"ratio {ratio!r} is not a number: give e.g. 4, 2.5 or 16") from None
    if not math.isfinite(r) or not 1 < r <= MAX_RATIO:
        raise PointCloudError(f"ratio {ratio!r} out of range: need a finite number > 1 and <= {MAX_RATIO:g}")
    return r


def passes_for(model_ratio: int, ratio: float) -> int:
    """Model passes for `ratio`: the fewest k >= 1 with model_ratio ** k >= ratio (the last pass is thinned to
    round(ratio N) points when ratio is not a power of model_ratio)."""
    ratio = check_ratio(ratio)
    k = 1
    while model_ratio**k < ratio - 1e-9:
        k += 1
    return k


def output_points(n: int, ratio: float) -> int:
    """Points an upsampling by `ratio` returns for n input points: round(ratio n) (Python's rounding)."""
    return round(check_ratio(ratio) * n)


@torch.no_grad()
def _patches(xyz: Tensor, seeds: Tensor, size: int) -> Tensor:
    """Indices [S,size] of the kNN patch around each seed point [S,3]."""
    return knn(seeds[None], xyz[None], size)[1][0]


@torch.no_grad()
def _infer(model: nn.Module, pts: Tensor, batch: int) -> tuple[Tensor, Tensor | None]:
    """Model output [S,P*r,3] for patches [S,P,3], each normalised to the unit sphere and mapped back, and the keep
    head's logits [S,P*r] when the model has one."""
    outs, scores = [], []
    for s in range(0, len(pts), batch):
        p_n, c, r = normalize_unit_sphere(pts[s : s + batch])
        with autocast(pts.device):
            y = model(p_n).float()
        outs.append(y * r + c)
        if getattr(model, "last_scores", None) is not None:
            scores.append(model.last_scores.float())
    return torch.cat(outs), torch.cat(scores) if scores else None


def trusted(cand: Tensor, logits: Tensor | None, total: int) -> Tensor:
    """The candidates [M,3] the keep head trusts (logit >= KEEP_LOGIT), or the `total` it trusts most when fewer
    are trusted; all of them for a model without a keep head."""
    if logits is None:
        return cand
    keep = logits >= KEEP_LOGIT
    if int(keep.sum()) < total:
        keep = torch.zeros_like(keep).scatter_(0, logits.topk(total).indices, True)
    return cand[keep]


@torch.no_grad()
def upsample_pass(model: nn.Module, xyz: Tensor, batch: int = 64, merge: Merge = "auto", keep: int | None = None) -> Tensor:
    """One x r pass over a cloud [N,3] on the model's device: exactly `keep` (default r N) points [keep,3]; fewer
    than r N are the merge's farthest-point picks (block by block, like the merge itself)."""
    n, r = xyz.shape[0], model.ratio
    keep = r * n if keep is None else int(keep)
    if not 0 < keep <= r * n:
        raise PointCloudError(f"one x{r} pass of {n} points cannot give {keep} points")
    xyz_n, centre, radius = normalize_unit_sphere(xyz)
    size = min(PATCH, n)
    n_seeds = max(1, math.ceil(n / size * SEED_FACTOR))
    seed_idx = farthest_point_sample(xyz_n[None], n_seeds)[0]
    idx = _patches(xyz_n, xyz_n[seed_idx], size)
    if merge == "auto":
        merge = "inner" if r * n <= BLOCKED_MAX else "assign"
    if merge in ("assign", "inner"):
        idx, seed_idx = _cover(xyz_n, idx, seed_idx, size)
    up, logits = _infer(model, xyz_n[idx], batch)
    if merge == "fps":
        flat = trusted(up.reshape(-1, 3), None if logits is None else logits.reshape(-1), keep)[None]
        out = gather_points(flat, farthest_point_sample(flat, keep))[0]
    elif merge == "blocked":
        out = blocked_fps_merge(xyz_n, trusted(up.reshape(-1, 3), None if logits is None else logits.reshape(-1), keep),
                                r, keep)
    elif merge == "assign":
        out = up.reshape(-1, r, 3)[_central(xyz_n, idx, seed_idx)].reshape(-1, 3)
        if keep < r * n:
            out = blocked_fps_merge(xyz_n, out, r, keep)
    elif merge == "inner":
        inner = (torch.arange(idx.shape[1], device=idx.device) < INNER * idx.shape[1]).repeat(idx.shape[0])
        inner[_central(xyz_n, idx, seed_idx)] = True
        cand = up.reshape(-1, r, 3)[inner].reshape(-1, 3)
        out = blocked_fps_merge(xyz_n, trusted(cand, None if logits is None else logits.reshape(-1, r)[inner].reshape(-1),
                                               keep), r, keep)
    else:
        raise PointCloudError(f"merge must be auto, inner, blocked, fps or assign, got {merge!r}")
    return out * radius + centre


def _cover(xyz: Tensor, idx: Tensor, seed_idx: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Add patches seeded at uncovered points until every point lies in some patch."""
    while True:
        covered = torch.zeros(len(xyz), dtype=torch.bool, device=xyz.device)
        covered[idx.reshape(-1)] = True
        missing = (~covered).nonzero()[:, 0]
        if not len(missing):
            return idx, seed_idx
        extra = missing[farthest_point_sample(xyz[missing][None], min(len(missing), max(1, len(idx) // 8)))[0]]
        idx = torch.cat([idx, _patches(xyz, xyz[extra], size)])
        seed_idx = torch.cat([seed_idx, extra])


def _central(xyz: Tensor, idx: Tensor, seed_idx: Tensor) -> Tensor:
    """Per input point, the flat patch slot [N] of its most central copy (the patch whose seed lies nearest)."""
    s, p = idx.shape
    flat = idx.reshape(-1)
    d = (xyz[idx] - xyz[seed_idx][:, None]).square().sum(-1).reshape(-1)
    best = torch.full((len(xyz),), float("inf"), dtype=d.dtype, device=xyz.device).scatter_reduce(0, flat, d, "amin")
    slot = torch.where(d == best[flat], torch.arange(s * p, device=xyz.device), s * p)
    return torch.full((len(xyz),), s * p, dtype=torch.long, device=xyz.device).scatter_reduce(0, flat, slot, "amin")


def upsample_cloud(
    model: nn.Module, xyz: Tensor | np.ndarray, ratio: float, batch: int = 64, merge: Merge = "auto"
) -> np.ndarray:
    """Upsample a cloud [N,3] by any ratio > 1: exactly round(ratio N) points. Powers of the model's ratio are
    whole passes (x16 = two x4 passes); any other ratio takes the fewest passes that reach it, the last one thinned
    by farthest-point sampling inside the merge's blocks (x2.5, x6: one or two x4 passes)."""
    t = check_cloud(xyz)
    device = next(model.parameters()).device
    cur = t.to(device)
    passes, total = passes_for(model.ratio, ratio), output_points(len(t), ratio)
    for p in range(passes):
        cur = upsample_pass(model, cur, batch, merge, total if p == passes - 1 else None)
    return cur.cpu().numpy()


def load_upsampler(run: str | Path | None, device: str | torch.device = "cpu") -> nn.Module:
    """The model of a run folder / .safetensors file, or the shipped default x4 PU-MFA when run is None (offline)."""
    from affcli.pointcloud.checkpoint import load_model

    if run is None and not DEFAULT_MODEL.is_file():
        raise PointCloudError(f"{DEFAULT_MODEL}: the shipped default model is missing from this install; pass --run")
    return load_model(DEFAULT_MODEL if run is None else run, device)


def default_batch(device: str | torch.device | None) -> int:
    """Patches per forward pass: 64 on CUDA, 16 on CPU."""
    return 64 if resolve_device(device).type == "cuda" else 16
