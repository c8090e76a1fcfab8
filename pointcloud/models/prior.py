"""Geometric priors the upsampling head refines: r positions per input point, in the network's output order.

`midpoint`: each point itself plus midpoints towards r-1 of its nearest neighbours, the kNN-midpoint
interpolation of Grad-PU (He et al., CVPR 2023) laid out per parent point. A pair of points that are each
other's near neighbours would give the same midpoint twice; the lower-indexed point owns such a pair and the
other takes its next neighbour instead, so a patch's r N prior points are (almost all) distinct.

`phong` (ours): the same owned midpoints, but (1) a chord that leaves the surface steeply (its angle to either
end's PCA tangent plane has sine above STEEP: two sides of a thin part, across a sharp crease) is passed over like
an owned pair, and (2) each midpoint m of (p, q) is lifted back onto the surface as Phong tessellation does at an
edge midpoint (Boubekeur & Alexa 2008): m + (pi_p(m) - m + pi_q(m) - m) / 4, pi_x the projection onto x's tangent
plane; on a circle of radius R this removes the chord's sag R(1 - cos t) to second order."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor

from affcli.pointcloud.models.delaunay import at_other_end, delaunay_mask, own_edges, reverse_slots, tangent_coords
from affcli.pointcloud.ops import gather_points, knn

PRIORS = ("none", "midpoint", "phong", "delaunay")
DELAUNAY_K = 16  # neighbours projected onto the tangent plane for the local Delaunay test
FAR = 3.0
OWNER_ROUNDS = 3
NORMAL_K = 12  # points (the point included) of the local PCA plane of the `phong` prior
STEEP = 0.6  # sine of a chord's angle to a tangent plane above which `phong` passes over the pair


def pca_normals(xyz: Tensor, idx: Tensor) -> Tensor:
    """Unit normals [B,N,3] (sign arbitrary): least-variance axis of each point's neighbourhood idx [B,N,k]."""
    nb = gather_points(xyz, idx)
    c = nb - nb.mean(2, keepdim=True)
    return torch.linalg.eigh(c.transpose(-1, -2) @ c)[1][..., 0]


def prior_points(xyz: Tensor, ratio: int, kind: str) -> Tensor:
    """[B,N,ratio,3] prior of `kind` ('midpoint', 'phong' or 'delaunay'; callers skip 'none', which has no prior)."""
    if kind == "delaunay":
        return delaunay_prior(xyz, ratio)
    return midpoint_prior(xyz, ratio, phong=kind == "phong")


def _nearest(skip: Tensor, want: int) -> Tensor:
    """Slots [B,N,want] of the nearest neighbours not skipped (skipped ones last, by rank)."""
    k = skip.shape[-1]
    return (skip.long() * (k + 1) + torch.arange(k, device=skip.device)).argsort(-1)[..., :want]


def _spread(mids: Tensor, dist: Tensor, skip: Tensor, want: int) -> Tensor:
    """Slots [B,N,want] picked by farthest-point order among the midpoints mids [B,N,k,3] (squared distances
    dist [B,N,k] to their point) towards the neighbours not skipped, starting from the point itself: spread-out
    children fill the gaps between input points (skipped ones only when nothing else is left)."""
    dist = torch.where(skip, -1.0, dist)
    out = []
    for _ in range(min(want, skip.shape[-1])):
        slot = dist.argmax(-1, keepdim=True)
        out.append(slot)
        step = (mids - mids.gather(2, slot.unsqueeze(-1).expand(-1, -1, 1, 3))).square().sum(-1)
        dist = torch.minimum(dist, torch.where(skip, -1.0, step)).scatter(-1, slot, -2.0)
    return torch.cat(out, -1)


@torch.no_grad()
def midpoint_prior(xyz: Tensor, ratio: int, k: int | None = None, phong: bool = False) -> Tensor:
    """[B,N,3] -> [B,N,ratio,3]: copy 0 is the point, copies 1.. midpoints towards owned near neighbours
    (phong: steep chords passed over, midpoints lifted onto the tangent planes; see the module docstring)."""
    b, n, _ = xyz.shape
    want = ratio - 1
    if want == 0:
        return xyz.unsqueeze(2)
    k = min(k or 2 * ratio, n - 1)
    with torch.autocast(xyz.device.type, enabled=False):
        d2, idx = knn(xyz.float(), xyz.float(), max(k, NORMAL_K - 1 if phong else 0) + 1)
    normals = pca_normals(xyz, idx[..., :NORMAL_K]) if phong else None
    d2, idx = d2[..., 1 : k + 1], idx[..., 1 : k + 1]
    me = torch.arange(n, device=xyz.device).view(1, n, 1)
    rank = torch.arange(k, device=xyz.device)
    skip = torch.zeros(b, n, k, dtype=torch.bool, device=xyz.device)
    if phong:
        chord = gather_points(xyz, idx) - xyz.unsqueeze(2)
        unit = chord / chord.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sine = torch.maximum((unit * normals.unsqueeze(2)).sum(-1).abs(), (unit * gather_points(normals, idx)).sum(-1).abs())
        skip = sine > STEEP
    pick = _nearest
    if phong:  # the candidate midpoints do not change between owner rounds
        cand = (xyz.unsqueeze(2) + gather_points(xyz, idx)) / 2
        cand_d2 = (cand - xyz.unsqueeze(2)).square().sum(-1)
        pick = partial(_spread, cand, cand_d2)
    chosen = pick(skip, want)
    for _ in range(OWNER_ROUNDS):  # fixed-point of: i skips j when j < i and j chose i
        j_near = gather_points(idx.gather(-1, chosen), idx)  # [B,N,k,want]: what each neighbour chose
        taken = (j_near == me.unsqueeze(-1)).any(-1) & (idx < me)
        chosen = pick(taken | skip, want)
    nb, nb_d2 = idx.gather(-1, chosen), d2.gather(-1, chosen)
    if k < want:
        nb = torch.cat([nb, nb[..., -1:].expand(b, n, want - k)], -1)
        nb_d2 = torch.cat([nb_d2, nb_d2[..., -1:].expand(b, n, want - k)], -1)
    # a 'neighbour' beyond FAR x the point's or the patch's typical spacing lies across a gap: keep the point
    spacing = torch.minimum(d2[..., :1], d2[..., :1].median(1, keepdim=True).values)
    far = nb_d2 > FAR**2 * spacing
    mids = (xyz.unsqueeze(2) + gather_points(xyz, nb)) / 2
    if phong:
        half = mids - xyz.unsqueeze(2)  # m - p = (q - p) / 2 = -(m - q)
        n_p, n_q = normals.unsqueeze(2), gather_points(normals, nb)
        lift = -(n_p * (n_p * half).sum(-1, keepdim=True)) + n_q * (n_q * half).sum(-1, keepdim=True)
        mids = mids + lift / 4
    mids = torch.where(far.unsqueeze(-1), xyz.unsqueeze(2), mids)
    return torch.cat([xyz.unsqueeze(2), mids], 2)


def _steep(xyz: Tensor, idx: Tensor, normals: Tensor) -> Tensor:
    """[B,N,k] bool: the chord to neighbour idx leaves either end's tangent plane at a sine above STEEP."""
    chord = gather_points(xyz, idx) - xyz.unsqueeze(2)
    unit = chord / chord.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sine = torch.maximum((unit * normals.unsqueeze(2)).sum(-1).abs(), (unit * gather_points(normals, idx)).sum(-1).abs())
    return sine > STEEP


def _lift(xyz: Tensor, normals: Tensor, nb: Tensor) -> Tensor:
    """Phong-lifted midpoints [B,N,w,3] of each point and its neighbours nb [B,N,w]."""
    mids = (xyz.unsqueeze(2) + gather_points(xyz, nb)) / 2
    half = mids - xyz.unsqueeze(2)
    n_p, n_q = normals.unsqueeze(2), gather_points(normals, nb)
    return mids + (-(n_p * (n_p * half).sum(-1, keepdim=True)) + n_q * (n_q * half).sum(-1, keepdim=True)) / 4


class LocalDelaunay(NamedTuple):
    """Each point's k nearest neighbours (d2, idx [B,N,k], the point itself left out), PCA normals [B,N,3], the
    neighbours' coordinates on its tangent plane [B,N,k,2], and which of them are usable Delaunay edges."""

    d2: Tensor
    idx: Tensor
    normals: Tensor
    plane: Tensor
    far: Tensor
    steep: Tensor
    edge: Tensor


def local_delaunay(xyz: Tensor) -> LocalDelaunay:
    """The local Delaunay structure of a float cloud [B,N,3] (N >= 2) shared by the Delaunay prior and the hole
    filling's triangle centroids: edges that pass the empty-circle test at either end, not steep, not across a gap."""
    n = xyz.shape[1]
    k = min(DELAUNAY_K, n - 1)
    d2, idx = knn(xyz, xyz, max(k, min(NORMAL_K, n) - 1) + 1)
    normals = pca_normals(xyz, idx[..., : min(NORMAL_K, n)])
    d2, idx = d2[..., 1 : k + 1], idx[..., 1 : k + 1]
    spacing = torch.minimum(d2[..., :1], d2[..., :1].median(1, keepdim=True).values)
    far = d2 > FAR**2 * spacing
    steep = _steep(xyz, idx, normals)
    plane = tangent_coords(xyz, idx, normals)
    dl = delaunay_mask(plane)
    rev, mutual = reverse_slots(idx)
    edge = (dl | (mutual & at_other_end(dl, idx, rev))) & ~steep & ~far
    return LocalDelaunay(d2, idx, normals, plane, far, steep, edge)


@torch.no_grad()
def delaunay_prior(xyz: Tensor, ratio: int, local: LocalDelaunay | None = None) -> Tensor:
    """[B,N,3] -> [B,N,ratio,3]: copy 0 is the point, copies 1.. lifted midpoints of its owned local Delaunay edges
    (see the module docstring); slots left over take its other edges, then its nearest pairs. `local`: the cloud's
    `local_delaunay`, when the caller has it already."""
    b, n, _ = xyz.shape
    want = ratio - 1
    if want == 0 or n < 2:
        return xyz.unsqueeze(2).expand(b, n, ratio, 3).clone()
    k = min(DELAUNAY_K, n - 1)
    with torch.autocast(xyz.device.type, enabled=False):
        xyz = xyz.float()
        d2, idx, normals, _, far, steep, edge = local_delaunay(xyz) if local is None else local
        mine = own_edges(edge, idx, d2, want)
        group = torch.where(mine, 0, torch.where(edge, 1, torch.where(~steep & ~far, 2, torch.where(far, 4, 3))))
        within = torch.where(mine, -d2, d2)  # own edges longest first, the others nearest first
        rank = within.argsort(-1).argsort(-1)
        chosen = (group * (k + 1) + rank).argsort(-1)[..., :want]
        if k < want:
            chosen = torch.cat([chosen, chosen[..., -1:].expand(b, n, want - k)], -1)
        nb = idx.gather(-1, chosen)
        mids = _lift(xyz, normals, nb)
        mids = torch.where(far.gather(-1, chosen).unsqueeze(-1), xyz.unsqueeze(2), mids)
    return torch.cat([xyz.unsqueeze(2), mids], 2)
