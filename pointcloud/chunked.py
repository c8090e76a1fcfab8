"""Upsampling of clouds too large for one pass: k-d chunks sized from a memory budget, each upsampled with a halo
of neighbouring points so its border patches are whole, the children of its own points kept (assign merge)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from affcli.common.notices import warn
from affcli.pointcloud.errors import PointCloudError
from affcli.pointcloud.holefill import FILL_MAX_POINTS
from affcli.pointcloud.ops import knn, normalize_unit_sphere
from affcli.pointcloud.merge import blocked_fps_merge, shares
from affcli.pointcloud.upsample import (PATCH, Merge, assign_children, duplicates_notice, output_points, passes_for,
                                       unit_cloud, upsample_pass)

FIXED_MIB = 192  # knn distance blocks (128 MiB cap) + network activations of one batch
BYTES_PER_POINT = 4096  # measured ~2.8 KiB per input point of a chunk (patches, outputs, merge), halo included
THIN_BYTES_PER_POINT = 8192  # a chunk that also thins its children (ratios other than powers of the model's)
BLOCKED_BYTES_PER_POINT = 16384  # a whole pass with the blocked FPS merge: measured ~11.5 KiB per point
FILL_BYTES_PER_POINT = 32768  # hole filling on top (Delaunay prior and its brute-force kNN): measured ~27-30 KiB/point
HALO_SAMPLES = 256
MAX_CHUNK = 1 << 16  # seeds FPS and patch kNN cost ~ chunk^2: 2M points in 64k chunks take ~1/4 the time of 256k ones


def chunk_points(max_memory_mib: float, n_points: int, ratio: int, per_point: int = BYTES_PER_POINT) -> int:
    """Largest chunk (input points) that keeps the peak under the budget, after the whole-cloud arrays."""
    whole = n_points * 4 * 3 * (1 + ratio) + n_points * 8 * 2
    room = max_memory_mib * 2**20 - FIXED_MIB * 2**20 - whole
    chunk = int(room // per_point)
    if chunk < 4 * PATCH and per_point == BYTES_PER_POINT:
        need = (FIXED_MIB * 2**20 + whole + 4 * PATCH * BYTES_PER_POINT) / 2**20
        raise PointCloudError(
            f"--max-memory {max_memory_mib:g} MiB too small for {n_points} points: need >= {need:.0f}"
        )
    return chunk


def kd_chunks(xyz: np.ndarray, size: int) -> list[np.ndarray]:
    """Index sets of at most `size` points: median splits along the longest box side (compact, balanced)."""
    out, todo = [], [np.arange(len(xyz))]
    while todo:
        idx = todo.pop()
        if len(idx) <= size:
            out.append(idx)
            continue
        pts = xyz[idx]
        axis = int(np.argmax(pts.max(0) - pts.min(0)))
        half = len(idx) // 2
        part = np.argpartition(pts[:, axis], half)
        todo += [idx[part[:half]], idx[part[half:]]]
    return out


def _halo(xyz: Tensor, core: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """Indices of points outside the core within 1.5 x the largest sampled patch radius of its bounding box."""
    pts = xyz[torch.from_numpy(core)]
    probe = pts[torch.randperm(len(pts), generator=gen)[:HALO_SAMPLES]]
    radius = float(knn(probe[None], pts[None], min(PATCH, len(pts)))[0][0, :, -1].max().sqrt()) * 1.5
    lo, hi = pts.min(0).values - radius, pts.max(0).values + radius
    inside = ((xyz >= lo) & (xyz <= hi)).all(1)
    inside[torch.from_numpy(core)] = False
    return inside.nonzero()[:, 0].numpy()


@torch.no_grad()
def chunked_pass(
    model: nn.Module,
    xyz: Tensor,
    batch: int,
    chunk: int,
    on_chunk: Callable[[int, int], None] | None = None,
    keep: int | None = None,
) -> Tensor:
    """One x r pass in chunks of <= `chunk` points: exactly r N points, children in input order (as assign); with
    `keep` < r N, each chunk thins its children to its share of `keep` by blocked FPS (then chunk by chunk)."""
    n, r = len(xyz), model.ratio
    keep = None if keep == r * n else keep
    if n <= chunk:
        if on_chunk:
            on_chunk(1, 1)
        return upsample_pass(model, xyz, batch, "assign", keep)
    gen = torch.Generator().manual_seed(0)
    chunks = kd_chunks(xyz.cpu().numpy(), chunk)
    quota = shares(torch.tensor([len(c) for c in chunks]), r * n if keep is None else keep).tolist()
    host, parts = xyz.cpu(), []
    out = torch.empty(n, r, 3, dtype=xyz.dtype) if keep is None else None
    for k, core in enumerate(chunks):
        ext = np.concatenate([core, _halo(host, core, gen)])
        ext_n, centre, radius = normalize_unit_sphere(xyz[torch.from_numpy(ext).to(xyz.device)])
        up = assign_children(model, ext_n, batch, own=len(core)) * radius + centre
        if out is not None:
            out[torch.from_numpy(core)] = up[: len(core) * r].reshape(len(core), r, 3).cpu()
            del up
        else:
            mine = up[: len(core) * r].clone()  # the halo's children freed before the thinning
            del up
            parts.append(blocked_fps_merge(xyz[torch.from_numpy(core).to(xyz.device)], mine, r, quota[k]).cpu())
            del mine
        if on_chunk:
            on_chunk(k + 1, len(chunks))
    return (out.reshape(-1, 3) if out is not None else torch.cat(parts)).to(xyz.device)


def upsample_large(
    model: nn.Module,
    xyz: Tensor | np.ndarray,
    ratio: float,
    max_memory_mib: float,
    batch: int = 16,
    merge: Merge = "auto",
    on_chunk: Callable[[int, int, int], None] | None = None,
    name: str = "input cloud",
    fill: bool = True,
) -> np.ndarray:
    """upsample_cloud within a memory budget (any ratio > 1, exactly round(ratio N) points of the N distinct ones):
    each pass whole when it fits (with hole filling when `fill`), else in k-d chunks with halos (no hole filling, said
    in a notice); on_chunk(pass, done, total) reports progress."""
    cloud = unit_cloud(xyz, name)
    if cloud.duplicates:
        warn(duplicates_notice(name, cloud, ratio))
    cur = cloud.points.to(next(model.parameters()).device)
    passes, total = passes_for(model.ratio, ratio), output_points(len(cur), ratio)
    for p in range(passes):
        keep = total if p == passes - 1 and total < model.ratio * len(cur) else None
        size = min(MAX_CHUNK, chunk_points(max_memory_mib, len(cur), model.ratio))
        if keep is not None:
            size = min(size, max(4 * PATCH, chunk_points(max_memory_mib, len(cur), model.ratio, THIN_BYTES_PER_POINT)))
        report = (lambda d, t, p=p: on_chunk(p, d, t)) if on_chunk else None
        filled = fill and len(cur) <= FILL_MAX_POINTS
        per_point = BLOCKED_BYTES_PER_POINT + (FILL_BYTES_PER_POINT if filled else 0)
        if len(cur) <= chunk_points(max_memory_mib, len(cur), model.ratio, per_point) and merge != "assign":
            cur = upsample_pass(model, cur, batch, merge, keep, fill)
            if report:
                report(1, 1)
        else:
            if fill:
                warn(f"{name}: hole filling skipped for a pass over {len(cur):,} points in chunks (it runs on whole "
                     f"passes of up to {FILL_MAX_POINTS:,} points within --max-memory): the network's children only")
            cur = chunked_pass(model, cur, batch, size, report, keep)
    return cloud.restore(cur, name)
