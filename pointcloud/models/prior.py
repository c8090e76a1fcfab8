"""Geometric priors the upsampling head refines: r positions per input point, in the network's output order.

`midpoint`: each point itself plus midpoints towards r-1 of its nearest neighbours, the kNN-midpoint
interpolation of Grad-PU (He et al., CVPR 2023) laid out per parent point. A pair of points that are each
other's near neighbours would give the same midpoint twice; the lower-indexed point owns such a pair and the
other takes its next neighbour instead, so a patch's r N prior points are (almost all) distinct."""

from __future__ import annotations

import torch
from torch import Tensor

from affcli.pointcloud.ops import gather_points, knn

PRIORS = ("none", "midpoint")
FAR = 3.0
OWNER_ROUNDS = 3


@torch.no_grad()
def midpoint_prior(xyz: Tensor, ratio: int, k: int | None = None) -> Tensor:
    """[B,N,3] -> [B,N,ratio,3]: copy 0 is the point, copies 1.. midpoints towards owned near neighbours."""
    b, n, _ = xyz.shape
    want = ratio - 1
    if want == 0:
        return xyz.unsqueeze(2)
    k = min(k or 2 * ratio, n - 1)
    with torch.autocast(xyz.device.type, enabled=False):
        d2, idx = knn(xyz.float(), xyz.float(), k + 1)
    d2, idx = d2[..., 1:], idx[..., 1:]
    me = torch.arange(n, device=xyz.device).view(1, n, 1)
    order = torch.arange(k, device=xyz.device).expand(b, n, k)
    for _ in range(OWNER_ROUNDS):  # fixed-point of: i skips j when j < i and j chose i
        j_near = gather_points(idx.gather(-1, order[..., :want]), idx)  # [B,N,k,want]: what each neighbour chose
        taken = (j_near == me.unsqueeze(-1)).any(-1) & (idx < me)
        order = (taken.long() * (k + 1) + torch.arange(k, device=xyz.device)).argsort(-1)
    nb, nb_d2 = idx.gather(-1, order[..., :want]), d2.gather(-1, order[..., :want])
    if k < want:
        nb = torch.cat([nb, nb[..., -1:].expand(b, n, want - k)], -1)
        nb_d2 = torch.cat([nb_d2, nb_d2[..., -1:].expand(b, n, want - k)], -1)
    # a 'neighbour' beyond FAR x the point's or the patch's typical spacing lies across a gap: keep the point
    spacing = torch.minimum(d2[..., :1], d2[..., :1].median(1, keepdim=True).values)
    far = nb_d2 > FAR**2 * spacing
    mids = (xyz.unsqueeze(2) + gather_points(xyz, nb)) / 2
    mids = torch.where(far.unsqueeze(-1), xyz.unsqueeze(2), mids)
    return torch.cat([xyz.unsqueeze(2), mids], 2)
