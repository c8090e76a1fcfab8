"""Hole filling after the merge: the network's children stay near their parents, so gaps in the input stay gaps
(most of PU-GCN's Hausdorff). The merged points are joined by the Delaunay prior's lifted edge midpoints, which
reach into those gaps, both screened by their distance to the nearest input point's tangent plane (strays off the
surface leave the pool), and a second blocked FPS merge picks the spread-out ones. Chosen on validation clouds only
(bench/pc_inference_variants.py; bench/RESULTS.md, issue 21)."""

from __future__ import annotations

import torch
from torch import Tensor

from affcli.common.notices import warn
from affcli.pointcloud.models.prior import NORMAL_K, delaunay_prior, pca_normals
from affcli.pointcloud.ops import knn

FILL_TOL = 0.1  # Delaunay candidates kept within this many median input spacings of the nearest tangent plane
MODEL_TOL = 0.3  # network candidates dropped beyond this many spacings off the nearest tangent plane
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
def fill_pool(xyz: Tensor, cand: Tensor, ratio: int, need: int) -> Tensor:
    """Merge candidates [M',3] for a pass over xyz [N,3] (unit frame): the network's candidates within MODEL_TOL of
    the surface plus the Delaunay prior's within FILL_TOL. Unchanged (with a notice above FILL_MAX_POINTS) when xyz
    has more than FILL_MAX_POINTS points or fewer than NORMAL_K; the unscreened network candidates lead when the
    screen leaves fewer than `need`."""
    n = len(xyz)
    if n > FILL_MAX_POINTS:
        warn(f"hole filling skipped for a pass over {n:,} points (it runs up to {FILL_MAX_POINTS:,}): the network's "
             "children only")
    if n > FILL_MAX_POINTS or n < NORMAL_K or ratio < 2:
        return cand
    d2, idx = knn(xyz[None], xyz[None], NORMAL_K)
    normals = pca_normals(xyz[None], idx)[0]
    spacing = d2[0, :, 1].sqrt().median()
    extra = delaunay_prior(xyz[None], ratio)[0, :, 1:].reshape(-1, 3)
    extra = extra[plane_offset(extra, xyz, normals, spacing) <= FILL_TOL]
    kept = cand[plane_offset(cand, xyz, normals, spacing) <= MODEL_TOL]
    pool = torch.cat([kept, extra])
    return pool if len(pool) >= need else torch.cat([cand, extra])
