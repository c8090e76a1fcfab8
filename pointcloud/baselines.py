"""Network-free upsampling baseline: midpoints of kNN pairs plus the input, FPS down to exactly r N points."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from affcli.pointcloud.ops import farthest_point_sample, gather_points, knn
from affcli.pointcloud.upsample import check_cloud, check_ratio


@torch.no_grad()
def midpoint_pass(xyz: Tensor, ratio: float) -> Tensor:
    """One pass [N,3] -> [round(ratio N),3]: the input and midpoints of its unique kNN pairs (k = 2 ceil(ratio)),
    FPS to round(ratio N)."""
    n = xyz.shape[0]
    k = min(2 * math.ceil(ratio), n - 1)
    idx = knn(xyz[None], xyz[None], k + 1)[1][0, :, 1:]
    i = torch.arange(n, device=xyz.device).repeat_interleave(k)
    j = idx.reshape(-1)
    pairs = torch.unique(torch.stack([torch.minimum(i, j), torch.maximum(i, j)], 1), dim=0)
    cand = torch.cat([xyz, (xyz[pairs[:, 0]] + xyz[pairs[:, 1]]) / 2])[None]
    m = min(round(ratio * n), cand.shape[1])
    return gather_points(cand, farthest_point_sample(cand, m))[0]


def midpoint_upsample(xyz, ratio: float, device: str | torch.device = "cpu") -> Tensor:
    """Midpoint upsampling by any ratio > 1 (powers of 4 as repeated x4 passes, like the networks; others in one
    pass after them): [round(ratio N),3] tensor."""
    cur = check_cloud(xyz).to(device)
    r = check_ratio(ratio)
    while r % 4 == 0 and r > 4:
        cur, r = midpoint_pass(cur, 4), r // 4
    return midpoint_pass(cur, r)
