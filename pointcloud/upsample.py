"""Whole-cloud upsampling with a patch network: FPS seeds, kNN patches, batched inference, merge to exactly r N points."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from affcli.common.device import autocast
from affcli.common.notices import warn
from affcli.pointcloud.errors import PointCloudError
from affcli.pointcloud.holefill import fill_pool
from affcli.pointcloud.merge import blocked_fps_merge
from affcli.pointcloud.ops import farthest_point_sample, gather_points, knn, normalize_unit_sphere
from affcli.pointcloud.runtime import resolve_device

PATCH = 256
SEED_FACTOR = 3
ASSIGN_SEED_FACTOR = 2.0  # assign: seeds per patch's worth of points (3 -> 2: 25% fewer patches; bench/pc_large.py)
MIN_POINTS = 16
BLOCKED_MAX = 1 << 20  # 'auto' merges by inner blocked FPS up to this many output points, by child assignment above
KEEP_LOGIT = 0.0  # merge candidates whose keep-head logit is below this are dropped first (probability 0.5)
INNER = 0.7  # 'inner' merge: children of the nearest INNER x PATCH points of each patch's seed are candidates
MAX_RATIO = 256.0
Merge = Literal["auto", "inner", "blocked", "fps", "assign"]
DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "pu_mfa_x4.safetensors"
NOISE_MODEL = DEFAULT_MODEL.parent / "noise" / "pu_mfa_x4_noise.safetensors"  # trained with input jitter
SHIPPED_WEIGHTS = {"clean": DEFAULT_MODEL, "noise": NOISE_MODEL}
SHIPPED_FILL = {"clean": True, "noise": False}  # hole filling unless --fill / --no-fill says otherwise


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


@dataclass
class UnitCloud:
    """A cloud as the upsamplers see it: its distinct points [M,3] float32 on the unit sphere, and the float64 centre
    and radius that map results back to the input's frame (any finite scale, 1e-30 to 1e30)."""

    points: Tensor
    centre: np.ndarray
    radius: float
    given: int

    @property
    def duplicates(self) -> int:
        """Input points dropped as exact copies of another (after normalisation to float32)."""
        return self.given - len(self.points)

    def restore(self, out: Tensor, name: str = "output") -> np.ndarray:
        """Points [K,3] of the unit frame mapped back to the input's frame, float32; one-line error past float32."""
        back = out.detach().cpu().double().numpy() * self.radius + self.centre
        if not np.isfinite(back).all() or np.abs(back).max() > np.finfo(np.float32).max:
            raise PointCloudError(f"{name}: upsampled coordinates exceed the float32 range (input near its limit)")
        return back.astype(np.float32)


def unit_cloud(xyz: Tensor | np.ndarray, name: str = "input cloud") -> UnitCloud:
    """The cloud checked (shape, finite), centred and scaled to the unit sphere in float64, then its exact duplicates
    dropped (first copies kept, in input order): degenerate input either becomes a well-posed cloud or is refused in
    one line naming `name` (all points equal, fewer than MIN_POINTS distinct ones)."""
    t = torch.as_tensor(np.asarray(xyz) if not isinstance(xyz, Tensor) else xyz)
    if t.ndim != 2 or t.shape[-1] != 3:
        raise PointCloudError(f"{name}: expected [N,3] points, got shape {list(t.shape)}")
    if t.shape[0] == 0:
        raise PointCloudError(f"{name}: empty point cloud")
    x = t.detach().cpu().double().numpy()
    if not np.isfinite(x).all():
        raise PointCloudError(f"{name}: contains NaN or infinite coordinates")
    centre = x.mean(0)
    centred = x - centre
    radius = float(np.sqrt(np.square(centred).sum(1).max()))
    unit = (centred / radius).astype(np.float32) if radius > 0 else np.zeros_like(centred, np.float32)
    _, first = np.unique(unit, axis=0, return_index=True)
    if len(first) < len(unit):
        unit = unit[np.sort(first)]
    if len(unit) < MIN_POINTS:
        if len(unit) == len(x):
            what = f"{len(x)} point{'s' if len(x) > 1 else ''}"
        elif len(unit) == 1:
            what = f"all {len(x)} points are the same point (equal in float32)"
        else:
            what = f"{len(x)} points but only {len(unit)} distinct (equal in float32)"
        raise PointCloudError(f"{name}: {what}; need at least {MIN_POINTS} distinct points to upsample")
    return UnitCloud(torch.from_numpy(np.ascontiguousarray(unit)), centre, radius, len(x))


def duplicates_notice(name: str, cloud: UnitCloud, ratio: float) -> str:
    """The one warning line for a cloud with duplicate points: how many were dropped and what the output holds."""
    return (f"{name}: {cloud.duplicates} duplicate point(s) dropped ({cloud.given} given, {len(cloud.points)} "
            f"distinct); output is {output_points(len(cloud.points), ratio)} points (x{ratio:g} of the distinct ones)")


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


def _batches(n: int, batch: int) -> list[tuple[int, int]]:
    """(start, stop) of forward passes over n patches, `batch` each; a lone last patch joins the batch before it
    (a one-patch pass takes other kernels and differs from a batched one by ~1e-7)."""
    bounds = list(range(0, n, max(1, batch))) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        bounds.pop(-2)
    return list(zip(bounds[:-1], bounds[1:]))


@torch.inference_mode()
def _infer(model: nn.Module, pts: Tensor, batch: int) -> tuple[Tensor, Tensor | None]:
    """Model output [S,P*r,3] for patches [S,P,3], each normalised to the unit sphere and mapped back, and the keep
    head's logits [S,P*r] when the model has one."""
    outs, scores = [], []
    for s, e in _batches(len(pts), batch):
        p_n, c, r = normalize_unit_sphere(pts[s:e])
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
def upsample_pass(model: nn.Module, xyz: Tensor, batch: int = 64, merge: Merge = "auto", keep: int | None = None,
                  fill: bool = True) -> Tensor:
    """One x r pass over a cloud [N,3] on the model's device: exactly `keep` (default r N) points [keep,3]; fewer
    than r N are the merge's farthest-point picks (block by block, like the merge itself). `fill` (merges inner,
    blocked, fps): the merged points, screened and joined by the hole-filling candidates of pointcloud.holefill, are
    merged once more by blocked FPS."""
    n, r = xyz.shape[0], model.ratio
    keep = r * n if keep is None else int(keep)
    if not 0 < keep <= r * n:
        raise PointCloudError(f"one x{r} pass of {n} points cannot give {keep} points")
    xyz_n, centre, radius = normalize_unit_sphere(xyz)
    if merge == "auto":
        merge = "inner" if r * n <= BLOCKED_MAX else "assign"
    if merge == "assign":
        out = assign_children(model, xyz_n, batch)
        if keep < r * n:
            out = blocked_fps_merge(xyz_n, out, r, keep)
        return out * radius + centre
    size = min(PATCH, n)
    n_seeds = max(1, math.ceil(n / size * SEED_FACTOR))
    seed_idx = farthest_point_sample(xyz_n[None], n_seeds)[0]
    idx = _patches(xyz_n, xyz_n[seed_idx], size)
    if merge == "inner":
        idx, seed_idx = _cover(xyz_n, idx, seed_idx, size)
    if merge not in ("fps", "blocked", "inner"):
        raise PointCloudError(f"merge must be auto, inner, blocked, fps or assign, got {merge!r}")
    up, logits = _infer(model, xyz_n[idx], batch)
    if merge == "inner":
        inner = (torch.arange(idx.shape[1], device=idx.device) < INNER * idx.shape[1]).repeat(idx.shape[0])
        inner[_central(xyz_n, idx, seed_idx)] = True
        cand = trusted(up.reshape(-1, r, 3)[inner].reshape(-1, 3),
                       None if logits is None else logits.reshape(-1, r)[inner].reshape(-1), keep)
    else:
        cand = trusted(up.reshape(-1, 3), None if logits is None else logits.reshape(-1), keep)
    if merge == "fps":
        out = gather_points(cand[None], farthest_point_sample(cand[None], keep))[0]
    else:
        out = blocked_fps_merge(xyz_n, cand, r, keep)
    if fill:
        out = blocked_fps_merge(xyz_n, fill_pool(xyz_n, out, r, keep), r, keep)
    return out * radius + centre


@torch.no_grad()
def assign_children(model: nn.Module, xyz: Tensor, batch: int, own: int | None = None,
                    seed_factor: float | None = None) -> Tensor:
    """The r children [own*r,3] of each of the first `own` points of xyz [N,3] (default all; the rest are context, a
    chunk's halo), in input order: each from the patch whose seed lies nearest among the patches holding the point.
    Seeds: FPS, seed_factor (default ASSIGN_SEED_FACTOR) per PATCH points, plus cover patches; only the patches some
    own point takes its children from go through the network (halo-only patches are skipped)."""
    n, r = len(xyz), model.ratio
    own = n if own is None else own
    size = min(PATCH, n)
    factor = ASSIGN_SEED_FACTOR if seed_factor is None else seed_factor
    seed_idx = farthest_point_sample(xyz[None], max(1, math.ceil(n / size * factor)))[0]
    idx, seed_idx = _cover(xyz, _patches(xyz, xyz[seed_idx], size), seed_idx, size, own)
    slot = _central(xyz, idx, seed_idx)[:own]
    used, where = torch.unique(torch.div(slot, size, rounding_mode="floor"), return_inverse=True)
    up, _ = _infer(model, xyz[idx[used]], batch)
    return up.reshape(-1, r, 3)[where * size + slot % size].reshape(-1, 3)


def _cover(xyz: Tensor, idx: Tensor, seed_idx: Tensor, size: int, own: int | None = None) -> tuple[Tensor, Tensor]:
    """Add patches seeded at uncovered points (of the first `own`, default all) until each lies in some patch. Each
    new patch holds its own seed (kNN ties between equal or nearly equal points could leave it out), so every round
    covers at least one more point and the loop ends after at most N new patches."""
    while True:
        covered = torch.zeros(len(xyz), dtype=torch.bool, device=xyz.device)
        covered[idx.reshape(-1)] = True
        missing = (~covered[:own]).nonzero()[:, 0]
        if not len(missing):
            return idx, seed_idx
        extra = missing[farthest_point_sample(xyz[missing][None], min(len(missing), max(1, len(idx) // 8)))[0]]
        new = _patches(xyz, xyz[extra], size)
        absent = ~(new == extra[:, None]).any(1)
        new[absent, -1] = extra[absent]
        idx = torch.cat([idx, new])
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
    model: nn.Module, xyz: Tensor | np.ndarray, ratio: float, batch: int = 64, merge: Merge = "auto",
    name: str = "input cloud", fill: bool = True,
) -> np.ndarray:
    """Upsample a cloud [N,3] by any ratio > 1: exactly round(ratio N) points (N distinct points: exact duplicates
    are dropped first, see unit_cloud). Powers of the model's ratio are whole passes (x16 = two x4 passes); any other
    ratio takes the fewest passes that reach it, the last one thinned by farthest-point sampling inside the merge's
    blocks (x2.5, x6: one or two x4 passes)."""
    cloud = unit_cloud(xyz, name)
    if cloud.duplicates:
        warn(duplicates_notice(name, cloud, ratio))
    device = next(model.parameters()).device
    cur = cloud.points.to(device)
    passes, total = passes_for(model.ratio, ratio), output_points(len(cur), ratio)
    for p in range(passes):
        cur = upsample_pass(model, cur, batch, merge, total if p == passes - 1 else None, fill)
    return cloud.restore(cur, name)


def model_choice(
    run: str | Path | None, weights: str = "clean", fill: bool | None = None
) -> tuple[str | Path | None, bool]:
    """What `--run`, `--weights` and `--fill` ask for: the run or the shipped weights of that name (None for the
    default, clean ones; both at once is refused in one line) and whether to fill holes (unset: on, except for the
    noise weights, whose input is noisy: the fill's candidates come from the input itself)."""
    if weights not in SHIPPED_WEIGHTS:
        raise PointCloudError(f"--weights must be one of {', '.join(SHIPPED_WEIGHTS)}, got {weights!r}")
    if run is not None and weights != "clean":
        raise PointCloudError(f"give --run or --weights {weights}, not both")
    fill = SHIPPED_FILL[weights] if fill is None else fill
    if run is not None or weights == "clean":
        return run, fill
    if not SHIPPED_WEIGHTS[weights].is_file():
        raise PointCloudError(f"{SHIPPED_WEIGHTS[weights]}: the shipped {weights!r} weights are missing from this "
                              "install; pass --run")
    return SHIPPED_WEIGHTS[weights], fill


def load_upsampler(run: str | Path | None, device: str | torch.device = "cpu") -> nn.Module:
    """The model of a run folder / .safetensors file, or the shipped default x4 PU-MFA when run is None (offline)."""
    from affcli.pointcloud.checkpoint import load_model

    if run is None and not DEFAULT_MODEL.is_file():
        raise PointCloudError(f"{DEFAULT_MODEL}: the shipped default model is missing from this install; pass --run")
    return load_model(DEFAULT_MODEL if run is None else run, device)


def default_batch(device: str | torch.device | None) -> int:
    """Patches per forward pass: 64 on CUDA; 4 on CPU, where small batches keep the activations in cache (about
    1.3x the patches per second of 16, same outputs)."""
    return 64 if resolve_device(device).type == "cuda" else 4
