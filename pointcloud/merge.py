"""Blocked farthest-point merge: the patch outputs reduced to exactly r N points by FPS run in parallel inside
small spatial blocks, instead of one sequential FPS over all candidates (r N steps over S*P*r points)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from affcli.pointcloud.errors import PointCloudError
from affcli.pointcloud.ops import fps_steps, farthest_point_sample, knn

BLOCK_INPUTS = 32  # input points per block: each block runs about r * 32 FPS steps, all blocks at once


def batched_fps(pts: Tensor, valid: Tensor, k: int) -> Tensor:
    """Indices [B,k] of FPS inside each row of pts [B,M,3], never picking an invalid (padding) entry
    while a valid one is left; rows start at index 0 (valid whenever the row has any point)."""
    return fps_steps(pts, torch.zeros(pts.shape[0], dtype=torch.long, device=pts.device), k, valid)


def _quotas(need: Tensor, have: Tensor) -> Tensor:
    """Per-block picks: `need` capped at `have`, the shortfall moved to blocks with spare candidates."""
    q = torch.minimum(need, have)
    short = int(need.sum() - q.sum())
    while short > 0:
        spare = have - q
        if int(spare.sum()) == 0:
            break
        add = torch.minimum(spare, torch.ceil(spare.double() / spare.sum() * short).long())
        add = (short - (add.cumsum(0) - add)).clamp_min(0).minimum(add)
        q += add
        short -= int(add.sum())
    return q


def shares(counts: Tensor, total: int) -> Tensor:
    """Integer shares of `total` proportional to counts [K] (largest remainders), summing to exactly `total`."""
    exact = counts.double() * total / counts.sum().clamp_min(1)
    out = exact.floor().long()
    short = total - int(out.sum())
    if short > 0:
        out[(exact - out).argsort(descending=True, stable=True)[:short]] += 1
    return out


@torch.no_grad()
def blocked_fps_merge(xyz: Tensor, cand: Tensor, r: int, total: int | None = None) -> Tensor:
    """Exactly `total` (default r N) points of candidates cand [M,3] around the input xyz [N,3]: blocks are the
    Voronoi cells of FPS anchors of the input; each block keeps its share of `total` (r x its input points when
    total = r N) of its candidates by FPS."""
    n = len(xyz)
    total = r * n if total is None else int(total)
    if len(cand) < total:
        raise PointCloudError(f"merge: {len(cand)} candidates cannot give {total} points")
    n_blocks = max(1, math.ceil(n / BLOCK_INPUTS))
    anchors = xyz[farthest_point_sample(xyz[None], n_blocks)[0]]
    in_block = knn(xyz[None], anchors[None], 1)[1][0, :, 0]
    cand_block = knn(cand[None], anchors[None], 1)[1][0, :, 0]
    need = shares(torch.bincount(in_block, minlength=n_blocks), total)
    have = torch.bincount(cand_block, minlength=n_blocks)
    quota = _quotas(need.cpu(), have.cpu()).to(xyz.device)
    order = torch.argsort(cand_block, stable=True)
    block, pts = cand_block[order], cand[order]
    slot = torch.arange(len(cand), device=cand.device) - (torch.cumsum(have, 0) - have)[block]
    size_class = torch.ceil(torch.log2(have.clamp_min(1).double()) / 2).long()  # widths within a factor of 4
    out_pts, out_block = [], []
    for c in size_class[quota > 0].unique().tolist():
        out = _fps_blocks(((size_class == c) & (quota > 0)).nonzero()[:, 0], block, slot, pts, have, quota)
        out_pts.append(out[0])
        out_block.append(out[1])
    return torch.cat(out_pts)[torch.argsort(torch.cat(out_block), stable=True)]


def _fps_blocks(blocks: Tensor, block: Tensor, slot: Tensor, pts: Tensor, have: Tensor, quota: Tensor) -> tuple[Tensor, Tensor]:
    """Batched FPS of `quota` picks in each of `blocks` (ids, ascending) of candidates pts sorted by block (slot in
    block); padded to the widest of them only, so one crowded block costs its own width, not every block's.
    Returns the picks (block-major, pick order) and their block ids."""
    row = torch.full((len(have),), -1, dtype=torch.long, device=pts.device)
    row[blocks] = torch.arange(len(blocks), device=pts.device)
    mine = row[block] >= 0
    width = int(have[blocks].max())
    grid = torch.zeros(len(blocks), width, 3, dtype=pts.dtype, device=pts.device)
    valid = torch.zeros(len(blocks), width, dtype=torch.bool, device=pts.device)
    grid[row[block[mine]], slot[mine]] = pts[mine]
    valid[row[block[mine]], slot[mine]] = True
    q = quota[blocks]
    picks = batched_fps(grid, valid, int(q.max()))
    keep = torch.arange(picks.shape[1], device=pts.device)[None] < q[:, None]
    return grid.gather(1, picks[..., None].expand(-1, -1, 3))[keep], blocks[:, None].expand_as(keep)[keep]
