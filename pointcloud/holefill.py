"""Hole filling after the merge: the network's children stay near their parents, so gaps in the input stay gaps
(most of PU-GCN's Hausdorff). The merged points are joined by the Delaunay prior's lifted edge midpoints and the
lifted centroids of the local Delaunay triangles (the centre of a triangle is the point of it farthest from the
input, where edge midpoints do not reach), all screened by their distance to the nearest input point's tangent plane
(strays off the surface leave the pool), and a second blocked FPS merge picks the spread-out ones. Chosen on
validation clouds only (bench/pc_inference_variants.py; bench/RESULTS.md, issue 21)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from affcli.common.notices import warn
from affcli.pointcloud.models.prior import NORMAL_K, LocalDelaunay, delaunay_prior, local_delaunay
from affcli.pointcloud.ops import knn

FILL_TOL = 0.1  # Delaunay candidates kept within this many median input spacings of the nearest tangent plane
MODEL_TOL = 0.3  # network candidates dropped beyond this many spacings off the nearest tangent plane
CENTROID_TOL = 0.2  # triangle centroids kept within this many spacings of all three corners' tangent planes
FILL_MAX_POINTS = 1 << 14  # passes over more input points merge without filling (the prior's kNN is brute force)


def nearest_input(query: Tensor, xyz: Tensor) -> Tensor:
    """Index [M] of each query point's nearest point of xyz [N,3]: a KD-tree on the CPU (the brute-force kNN is
    quadratic), blocked distances on an accelerator."""
    if query.device.type != "cpu":
        return knn(query[None], xyz[None], 1)[1][0, :, 0]
    from scipy.spatial import cKDTree

    from affcli.common.threads import thread_budget

    tree = cKDTree(xyz.double().numpy(), balanced_tree=False, compact_nodes=False)
    return torch.from_numpy(tree.query(query.double().numpy(), k=1, workers=thread_budget())[1]).long()


def plane_offset(query: Tensor, xyz: Tensor, normals: Tensor, spacing: Tensor) -> Tensor:
    """Distance [M] of each query point [M,3] to the tangent plane of its nearest input point (xyz [N,3], unit
    normals [N,3]), in units of `spacing` (the inputs' median nearest-neighbour distance)."""
    near = nearest_input(query, xyz)
    return ((query - xyz[near]) * normals[near]).sum(-1).abs() / spacing.clamp_min(1e-12)


@torch.no_grad()
def triangle_centroids(xyz: Tensor, local: LocalDelaunay, spacing: Tensor) -> Tensor:
    """Lifted centroids [T,3] of the local Delaunay triangles of xyz [N,3] (local: its `local_delaunay`, batch 1):
    each point's angularly consecutive Delaunay neighbours less than pi apart close a triangle, each triangle counted
    once; its centroid is lifted like the prior's edge midpoints (half way to the mean of its projections onto the
    corners' tangent planes) and kept within CENTROID_TOL spacings of all three planes (a triangle across a crease
    or a thin part is not)."""
    idx, normals, edge, plane = local.idx[0], local.normals[0], local.edge[0], local.plane[0]
    n, k = idx.shape
    angle = torch.where(edge, torch.atan2(plane[..., 1], plane[..., 0]), torch.full_like(plane[..., 0], 4 * math.pi))
    order = angle.argsort(-1)
    angle, nb = angle.gather(-1, order), idx.gather(-1, order)
    count = edge.sum(-1, keepdim=True)
    slot = torch.arange(k, device=xyz.device).expand(n, k)
    nxt = torch.where(slot + 1 < count, slot + 1, 0)
    gap = torch.remainder(angle.gather(-1, nxt) - angle, 2 * math.pi)
    closed = (slot < count) & (count >= 2) & (gap > 0) & (gap < math.pi)
    tri = torch.stack([torch.arange(n, device=xyz.device)[:, None].expand(n, k), nb, nb.gather(-1, nxt)], -1)[closed]
    tri = torch.unique(tri.sort(-1).values, dim=0)
    corners, corner_normals = xyz[tri], normals[tri]  # [T,3,3]
    centre = corners.mean(1)
    off = ((centre[:, None] - corners) * corner_normals).sum(-1, keepdim=True)  # [T,3,1]
    lifted = centre - (corner_normals * off).mean(1) / 2
    worst = ((lifted[:, None] - corners) * corner_normals).sum(-1).abs().amax(1)
    return lifted[worst <= CENTROID_TOL * spacing]


@torch.no_grad()
def fill_pool(xyz: Tensor, cand: Tensor, ratio: int, need: int) -> Tensor:
    """Merge candidates [M',3] for a pass over xyz [N,3] (unit frame): the network's candidates within MODEL_TOL of
    the surface plus the Delaunay prior's midpoints and the triangle centroids within FILL_TOL. Unchanged (with a
    notice above FILL_MAX_POINTS) when xyz has more than FILL_MAX_POINTS points or fewer than NORMAL_K; the
    unscreened network candidates lead when the screen leaves fewer than `need`."""
    n = len(xyz)
    if n > FILL_MAX_POINTS:
        warn(f"hole filling skipped for a pass over {n:,} points (it runs up to {FILL_MAX_POINTS:,}): the network's "
             "children only")
    if n > FILL_MAX_POINTS or n < NORMAL_K or ratio < 2:
        return cand
    with torch.autocast(xyz.device.type, enabled=False):
        xyz, cand = xyz.float(), cand.float()
        local = local_delaunay(xyz[None])
        normals = local.normals[0]
        spacing = local.d2[0, :, 0].clamp_min(0).sqrt().median()
        extra = torch.cat([delaunay_prior(xyz[None], ratio, local)[0, :, 1:].reshape(-1, 3),
                           triangle_centroids(xyz, local, spacing)])
        off = plane_offset(torch.cat([extra, cand]), xyz, normals, spacing)  # one nearest-input search for both
        extra, kept = extra[off[: len(extra)] <= FILL_TOL], cand[off[len(extra):] <= MODEL_TOL]
    pool = torch.cat([kept, extra])
    return pool if len(pool) >= need else torch.cat([cand, extra])
