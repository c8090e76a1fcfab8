"""Local Delaunay edges of a point cloud on each point's tangent plane, and their ownership by one end each.

Edge midpoints of a surface triangulation are the x4 layout with the fewest holes (Loop subdivision: V + E = 4V
points, every triangle split into four of half the size). Each point projects its k nearest neighbours onto its
PCA tangent plane and keeps the pairs (p, q) that pass the empty-circle test there: the largest angles under which
the neighbours on either side of pq see it sum to less than pi. A triangulation has about 3 edges per point, the
r - 1 = 3 free slots of an x4 prior; each edge is given to one end with room (out-degree <= r - 1), which a planar
graph always admits (arboricity <= 3). Done with batched tensors; no per-point scipy calls."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from affcli.pointcloud.ops import gather_points

TIE = 1e-3  # cocircular points (grids): both diagonals of a square count as Delaunay
BALANCE_ROUNDS = 8


def tangent_coords(xyz: Tensor, idx: Tensor, normals: Tensor) -> Tensor:
    """2D coordinates [B,N,k,2] of each point's neighbours idx [B,N,k] on its tangent plane (normal [B,N,3])."""
    helper = torch.where(normals[..., :1].abs() < 0.9, normals.new_tensor([1.0, 0, 0]), normals.new_tensor([0, 1.0, 0]))
    u = torch.linalg.cross(normals, helper)
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    v = torch.linalg.cross(normals, u)
    rel = gather_points(xyz, idx) - xyz.unsqueeze(2)
    return torch.stack([(rel * u.unsqueeze(2)).sum(-1), (rel * v.unsqueeze(2)).sum(-1)], -1)


def delaunay_mask(plane: Tensor) -> Tensor:
    """[B,N,k] bool: is (p, neighbour j) a Delaunay edge of p's projected neighbourhood plane [B,N,k,2] (p at 0)."""
    k = plane.shape[2]
    q, r = plane.unsqueeze(3), plane.unsqueeze(2)  # edge end j, third point m
    to_p, to_q = -r, q - r
    cos = (to_p * to_q).sum(-1) / (to_p.norm(dim=-1) * to_q.norm(dim=-1)).clamp_min(1e-12)
    angle = torch.acos(cos.clamp(-1.0, 1.0))  # [B,N,j,m]: angle p-m-q
    side = q[..., 0] * r[..., 1] - q[..., 1] * r[..., 0]
    other = ~torch.eye(k, dtype=torch.bool, device=plane.device)
    zero = angle.new_zeros(())
    left = torch.where((side > 0) & other, angle, zero).amax(-1)
    right = torch.where((side < 0) & other, angle, zero).amax(-1)
    return left + right < math.pi + TIE


def reverse_slots(idx: Tensor) -> tuple[Tensor, Tensor]:
    """For each edge (p, q = idx[p, j]): the slot of p in q's neighbour list [B,N,k] and whether p is in it."""
    n = idx.shape[1]
    me = torch.arange(n, device=idx.device).view(1, n, 1, 1)
    hit = gather_points(idx, idx) == me  # [B,N,k,k]: q's slot m holds p
    return hit.float().argmax(-1), hit.any(-1)


def at_other_end(x: Tensor, idx: Tensor, rev: Tensor) -> Tensor:
    """x [B,N,k] read at the other end of every edge: y[p, j] = x[q, slot of p in q's list], q = idx[p, j]
    (meaningless where p is not in q's list)."""
    return gather_points(x, idx).gather(-1, rev.unsqueeze(-1)).squeeze(-1)


def own_edges(edge: Tensor, idx: Tensor, length: Tensor, cap: int) -> Tensor:
    """[B,N,k] bool: which end owns each edge (edge [B,N,k], the same at both ends where both list each other), at
    most `cap` per point as far as rebalancing allows; an edge only one end lists is that end's. Start: the end of
    lower degree (ties: lower index); then BALANCE_ROUNDS of handing a point's surplus (its shortest edges) to other
    ends with room, each accepting offers up to its room."""
    n = edge.shape[1]
    rev, mutual = reverse_slots(idx)
    me = torch.arange(n, device=idx.device).view(1, n, 1)
    deg = edge.sum(-1, keepdim=True)
    deg_q = gather_points(deg, idx).squeeze(-1)
    mine = edge & (~mutual | (deg < deg_q) | ((deg == deg_q) & (me < idx)))
    for _ in range(BALANCE_ROUNDS):
        moved = False
        for relay in (False, True):
            count = mine.sum(-1, keepdim=True)
            room = cap - gather_points(count, idx).squeeze(-1)  # at the other end of each edge
            if relay:  # p over cap, q full but with an edge it can hand on: q takes one to pass on next round
                exit_q = (mine & mutual & (room > 0)).any(-1, keepdim=True)
                target = (room == 0) & gather_points(exit_q, idx).squeeze(-1)
                excess, limit = (count > cap).long(), (count == cap) & exit_q
            else:
                target, excess, limit = room > 0, (count - cap).clamp_min(0), (cap - count).clamp_min(0)
            movable = mine & mutual & target
            rank = torch.where(movable, length, torch.inf).argsort(-1).argsort(-1)  # shortest first: keep long ones
            surplus = movable & (rank < excess)
            offered = at_other_end(surplus, idx, rev) & mutual  # in q's frame: p = idx[q, m] offers edge m to q
            taken = offered & (offered.long().cumsum(-1) <= limit.long())
            if taken.any():
                moved = True
                mine = (mine & ~(at_other_end(taken, idx, rev) & surplus)) | taken
        if not moved:
            break
    return mine
