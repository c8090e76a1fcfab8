"""Batched point-cloud primitives in pure torch (CPU or CUDA, device follows the inputs): FPS, kNN, ball query."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from affcli.pointcloud.errors import PointCloudError, check_xyz_shape

BLOCK_ELEMENTS = 1 << 25  # cap on distance-matrix entries held at once (128 MiB in float32)
FPS_GRAPH_MIN_K = 32  # on CUDA, FPS of at least this many samples replays a captured graph
FPS_GRAPH_CACHE = 32  # captured FPS graphs kept (one per input shape and k)
_FPS_GRAPHS: dict[tuple, tuple | None] = {}


def block_rows(batch: int, n_ref: int, chunk: int) -> int:
    """Query rows per block so one [B, rows, N] block stays under BLOCK_ELEMENTS (and under `chunk`)."""
    return max(1, min(chunk, BLOCK_ELEMENTS // max(1, batch * n_ref)))


def sqdist(query: Tensor, ref: Tensor, ref_sq: Tensor) -> Tensor:
    """Squared distances [B,M,N] by the matmul expansion, clamped at 0 (fast, ~1e-7 absolute error)."""
    d2 = (query * query).sum(-1, keepdim=True) + ref_sq.unsqueeze(-2) - 2.0 * query @ ref.transpose(1, 2)
    return d2.clamp_min_(0.0)


@torch.no_grad()
def farthest_point_sample(
    xyz: Tensor,
    k: int,
    start: Literal["first", "random"] = "first",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Indices [B,k] of k distinct points (even with duplicate points) by farthest point sampling, batched."""
    check_xyz_shape(xyz, "farthest_point_sample xyz")
    b, n, _ = xyz.shape
    if not 0 < k <= n:
        raise PointCloudError(f"farthest_point_sample: k={k} must be in 1..{n} (number of points)")
    if start not in ("first", "random"):
        raise PointCloudError(f"farthest_point_sample: start must be 'first' or 'random', got {start!r}")
    dev = xyz.device
    if start == "first":
        cur = torch.zeros(b, dtype=torch.long, device=dev)
    else:
        cur = torch.randint(n, (b,), generator=generator, device=generator.device if generator else "cpu").to(dev)
    if dev.type == "cuda" and k >= FPS_GRAPH_MIN_K and not torch.cuda.is_current_stream_capturing():
        out = _fps_graph(xyz, cur, k)
        if out is not None:
            return out
    return fps_steps(xyz, cur, k)


def fps_steps(xyz: Tensor, cur: Tensor, k: int, valid: Tensor | None = None) -> Tensor:
    """The FPS loop from start indices `cur` [B]: k steps of distance update and argmax; entries where `valid`
    [B, N] is False (padding) are never picked while a valid one is left."""
    b, n, _ = xyz.shape
    if valid is None:
        dist = torch.full((b, n), float("inf"), dtype=xyz.dtype, device=xyz.device)
    else:
        dist = torch.where(valid, torch.inf, -1.0).to(xyz.dtype)
    picked = []
    for _ in range(k):
        picked.append(cur)
        centre = xyz.gather(1, cur.view(b, 1, 1).expand(b, 1, 3))
        torch.minimum(dist, (xyz - centre).square_().sum(-1), out=dist)
        dist.scatter_(1, cur.view(b, 1), -2.0)
        cur = dist.argmax(-1)
    return torch.stack(picked, 1)


def _fps_graph(xyz: Tensor, cur: Tensor, k: int) -> Tensor | None:
    """The same loop replayed as one captured CUDA graph per (shape, dtype, device, k): same kernels, same
    indices, without the per-step launch cost; None if capture fails (the caller runs the loop eagerly)."""
    key = (tuple(xyz.shape), xyz.dtype, xyz.device, k)
    if key not in _FPS_GRAPHS:
        if len(_FPS_GRAPHS) >= FPS_GRAPH_CACHE:
            _FPS_GRAPHS.pop(next(iter(_FPS_GRAPHS)))
        try:
            s_xyz, s_cur = xyz.contiguous().clone(), cur.clone()
            side = torch.cuda.Stream(device=xyz.device)
            side.wait_stream(torch.cuda.current_stream(xyz.device))
            with torch.cuda.stream(side):
                fps_steps(s_xyz, s_cur, k)
            torch.cuda.current_stream(xyz.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                s_out = fps_steps(s_xyz, s_cur, k)
            _FPS_GRAPHS[key] = (graph, s_xyz, s_cur, s_out)
        except RuntimeError:
            _FPS_GRAPHS[key] = None
    entry = _FPS_GRAPHS[key]
    if entry is None:
        return None
    graph, s_xyz, s_cur, s_out = entry
    s_xyz.copy_(xyz)
    s_cur.copy_(cur)
    graph.replay()
    return s_out.clone()


def knn(query: Tensor, ref: Tensor, k: int, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """k nearest neighbours in `ref` of each query point: (squared distances [B,M,k] ascending, idx [B,M,k]).

    Candidates come from the matmul expansion in blocks of query rows; the returned distances are
    recomputed exactly as |q - r|^2 for the selected neighbours (differentiable; the choice is not)."""
    check_xyz_shape(query, "knn query")
    check_xyz_shape(ref, "knn ref")
    b, m, _ = query.shape
    n = ref.shape[1]
    if ref.shape[0] != b:
        raise PointCloudError(f"knn: batch sizes differ, query {b} vs ref {ref.shape[0]}")
    if not 0 < k <= n:
        raise PointCloudError(f"knn: k={k} must be in 1..{n} (reference points)")
    with torch.no_grad():
        ref_sq = (ref * ref).sum(-1)
        rows = block_rows(b, n, chunk)
        idx_parts = []
        for s in range(0, m, rows):
            d2 = sqdist(query[:, s : s + rows], ref, ref_sq)
            if k == 1:
                idx_parts.append(d2.argmin(-1, keepdim=True))
            else:
                idx_parts.append(d2.topk(k, dim=-1, largest=False, sorted=True).indices)
        idx = torch.cat(idx_parts, 1)
    nbr = gather_points(ref, idx)
    dist2 = ((nbr - query.unsqueeze(2)) ** 2).sum(-1)
    if k > 1:
        dist2, order = dist2.sort(-1)
        idx = idx.gather(-1, order)
    return dist2, idx


@torch.no_grad()
def ball_query(query: Tensor, ref: Tensor, radius: float, k: int, chunk: int = 4096) -> Tensor:
    """Indices [B,M,k] of the first k ref points (in ref order) within `radius` of each query point.

    PointNet++ convention: slots beyond the points found repeat the first one found; a query with
    no point in range gets all zeros (as the CUDA kernel's zero-initialised output)."""
    check_xyz_shape(query, "ball_query query")
    check_xyz_shape(ref, "ball_query ref")
    b, m, _ = query.shape
    n = ref.shape[1]
    if ref.shape[0] != b:
        raise PointCloudError(f"ball_query: batch sizes differ, query {b} vs ref {ref.shape[0]}")
    if not 0 < k <= n:
        raise PointCloudError(f"ball_query: k={k} must be in 1..{n} (reference points)")
    ref_sq = (ref * ref).sum(-1)
    order = torch.arange(n, device=ref.device)
    rows = block_rows(b, n, chunk)
    parts = []
    for s in range(0, m, rows):
        inside = sqdist(query[:, s : s + rows], ref, ref_sq) < radius * radius
        key = torch.where(inside, order, n)
        first_k = key.topk(k, dim=-1, largest=False, sorted=True).values
        first = first_k[..., :1]
        first_k = torch.where(first_k == n, first, first_k)
        parts.append(torch.where(first_k == n, 0, first_k))
    return torch.cat(parts, 1)


def gather_points(xyz: Tensor, idx: Tensor) -> Tensor:
    """Rows of `xyz` [B,N,C] picked by `idx` [B,...] -> [B,...,C] (one index_select of whole rows: about twice as
    fast as a gather with an index expanded over C, same values)."""
    if xyz.ndim != 3:
        raise PointCloudError(f"gather_points: expected xyz [B,N,C], got {list(xyz.shape)}")
    if idx.shape[0] != xyz.shape[0]:
        raise PointCloudError(f"gather_points: batch sizes differ, xyz {xyz.shape[0]} vs idx {idx.shape[0]}")
    b, n, c = xyz.shape
    offset = (torch.arange(b, device=idx.device) * n).view(b, *([1] * (idx.ndim - 1)))
    return xyz.reshape(b * n, c).index_select(0, (idx + offset).reshape(-1)).reshape(*idx.shape, c)


def normalize_unit_sphere(xyz: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Subtract the centroid, divide by the max norm: (normalised [...,N,3], centroid [...,1,3], radius [...,1,1])."""
    if xyz.ndim < 2 or xyz.shape[-1] != 3 or xyz.shape[-2] == 0:
        raise PointCloudError(f"normalize_unit_sphere: expected non-empty [...,N,3], got {list(xyz.shape)}")
    centroid = xyz.mean(-2, keepdim=True)
    centred = xyz - centroid
    radius = centred.norm(dim=-1, keepdim=True).amax(-2, keepdim=True)
    return centred / radius.clamp_min(torch.finfo(xyz.dtype).tiny), centroid, radius
