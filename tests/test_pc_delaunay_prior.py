"""The `delaunay` prior: local tangent-plane Delaunay edges match a real triangulation, each edge has one owner with
at most r - 1 edges per point, and its midpoints leave smaller holes than the `phong` prior's picks."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import Delaunay, cKDTree

from affcli.pointcloud.models.delaunay import at_other_end, delaunay_mask, own_edges, reverse_slots, tangent_coords
from affcli.pointcloud.models.prior import DELAUNAY_K, prior_points
from affcli.pointcloud.ops import farthest_point_sample, gather_points, knn


def blue_noise(n: int, seed: int = 0) -> np.ndarray:
    """n points of the unit square, no two closer than 0.6 / sqrt(n) (dart throwing): Poisson-disk-like inputs."""
    rng, pts, r = np.random.default_rng(seed), [], 0.6 / np.sqrt(n)
    while len(pts) < n:
        p = rng.random(2)
        if not pts or np.min(np.linalg.norm(np.asarray(pts) - p, axis=1)) > r:
            pts.append(p)
    return np.asarray(pts)


def local_edges(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(symmetric edge mask [1,N,k], neighbour idx, squared lengths) as the prior computes them (plane z = 0)."""
    d2, idx = knn(xyz, xyz, DELAUNAY_K + 1)
    d2, idx = d2[..., 1:], idx[..., 1:]
    normals = torch.tensor([0.0, 0.0, 1.0]).expand_as(xyz)
    dl = delaunay_mask(tangent_coords(xyz, idx, normals))
    rev, mutual = reverse_slots(idx)
    return dl | (mutual & at_other_end(dl, idx, rev)), idx, d2


def test_local_delaunay_edges_match_a_triangulation():
    pts = blue_noise(600)
    xyz = torch.tensor(np.c_[pts, np.zeros(len(pts))], dtype=torch.float32)[None]
    edge, idx, _ = local_edges(xyz)
    ours = {tuple(sorted((i, int(j)))) for i, js in enumerate(idx[0].tolist()) for j, e in zip(js, edge[0, i]) if e}
    tri = Delaunay(pts).simplices
    truth = {tuple(sorted((int(a), int(b)))) for t in tri for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    inner = {e for e in truth if all(0.1 < c < 0.9 for c in pts[list(e)].ravel())}  # away from the hull
    assert len(inner & ours) / len(inner) > 0.99
    assert len({e for e in ours if e not in truth and all(0.1 < c < 0.9 for c in pts[list(e)].ravel())}) < 0.01 * len(inner)


def test_every_edge_has_one_owner_and_points_own_at_most_three():
    pts = blue_noise(600, seed=1)
    xyz = torch.tensor(np.c_[pts, np.zeros(len(pts))], dtype=torch.float32)[None]
    edge, idx, d2 = local_edges(xyz)
    mine = own_edges(edge, idx, d2, 3)
    rev, mutual = reverse_slots(idx)
    both = mine & mutual & at_other_end(mine, idx, rev)
    assert not both.any() and not (mine & ~edge).any()
    owned = mine.sum(-1)
    assert float((owned > 3).float().mean()) < 0.03  # a planar graph admits <= 3; the rounds get nearly there
    assert int(owned.clamp_max(3).sum()) > 0.98 * int(edge.sum()) / 2  # nearly every edge gets a child


def test_delaunay_midpoints_fill_more_holes_than_phong():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6000, 3, generator=g)
    x = x / x.norm(dim=-1, keepdim=True)
    x = gather_points(x, farthest_point_sample(x, 1500))  # even spacing, like Poisson-disk inputs
    dense = torch.randn(1, 20000, 3, generator=g)
    dense = (dense / dense.norm(dim=-1, keepdim=True))[0].numpy()
    holes = {}
    for kind in ("phong", "delaunay"):
        prior = prior_points(x, 4, kind)
        assert prior.shape == (1, 1500, 4, 3) and torch.equal(prior[:, :, 0], x)  # copy 0 is the point
        assert float((prior.norm(dim=-1) - 1).abs().max()) < 0.01  # lifted onto the sphere
        holes[kind] = cKDTree(prior.reshape(-1, 3).numpy()).query(dense)[0].max()
    assert holes["delaunay"] < 0.85 * holes["phong"]


def test_pinned_input_is_copy_zero_after_any_head():
    from affcli.pointcloud.models import create_model

    torch.manual_seed(0)
    model = create_model("pu-mfa", 4, dim=16, growth=8, dense_layers=2, scales=[8, 16], levels=1, heads=2, code_dim=8,
                         prior="delaunay", prior_features=True, offset_bound=1.0, pin_input=True).eval()
    torch.nn.init.normal_(model.head[-1].weight, std=0.5)  # a head that moves every copy
    x = torch.randn(2, 128, 3)
    with torch.no_grad():
        out = model(x).reshape(2, 128, 4, 3)
    assert torch.equal(out[:, :, 0], x) and float((out[:, :, 1:] - prior_points(x, 4, "delaunay")[:, :, 1:]).abs().max()) > 1e-3
