"""Upsampling metrics (Chamfer, Hausdorff, point-to-mesh) in the PU-GCN evaluate.py conventions; see FORMATS.md."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from affcli.pointcloud.errors import PointCloudError, check_xyz_shape
from affcli.pointcloud.io import read_cloud, read_mesh
from affcli.pointcloud.ops import block_rows, gather_points, normalize_unit_sphere, sqdist

if TYPE_CHECKING:
    import polars as pl

PAIR_BLOCK = {"cpu": 1 << 21, "cuda": 1 << 24}  # point x triangle pairs per block in point_to_mesh_distance
CLOUD_EXTS = (".xyz", ".ply", ".npy", ".bin", ".txt", ".pts")
MESH_EXTS = (".off", ".obj", ".ply")
ROW_COLUMNS = ("shape", "cd", "hd", "p2f_mean", "p2f_std", "cd_gt", "hd_gt", "n_pred", "n_gt")
SCORE_KEYS = ("cd", "hd", "p2f_mean", "p2f_std", "cd_gt", "hd_gt")  # float columns (raw units)
TREE_PAIRS = {"cpu": 1 << 26, "cuda": 1 << 34}  # above this many point pairs, nearest neighbours use a KD-tree


def _nn_sq(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Squared nearest-neighbour distances pred->gt [B,N] and gt->pred [B,M] from one pass of distance blocks.

    Neighbours are picked without autograd; the returned distances are recomputed exactly and differentiable."""
    check_xyz_shape(pred, "pred")
    check_xyz_shape(gt, "gt")
    if pred.shape[0] != gt.shape[0]:
        raise PointCloudError(f"pred and gt batch sizes differ: {pred.shape[0]} vs {gt.shape[0]}")
    b, n, m = pred.shape[0], pred.shape[1], gt.shape[1]
    with torch.no_grad():
        gt_sq = (gt * gt).sum(-1)
        col_min = torch.full((b, m), float("inf"), dtype=pred.dtype, device=pred.device)
        col_idx = torch.zeros((b, m), dtype=torch.long, device=pred.device)
        row_idx = []
        rows = block_rows(b, m, 4096)
        for s in range(0, n, rows):
            d2 = sqdist(pred[:, s : s + rows], gt, gt_sq)
            row_idx.append(d2.argmin(-1))
            val, arg = d2.min(1)
            better = val < col_min
            col_min = torch.where(better, val, col_min)
            col_idx = torch.where(better, arg + s, col_idx)
    fwd = ((gather_points(gt, torch.cat(row_idx, 1)) - pred) ** 2).sum(-1)
    bwd = ((gather_points(pred, col_idx) - gt) ** 2).sum(-1)
    return fwd, bwd


def use_tree(n: int, m: int, device: torch.device) -> bool:
    """Whether n x m nearest-neighbour pairs go to a KD-tree (large clouds: O((n + m) log m) time, O(n + m) memory)
    rather than blocks of brute-force distances (exact same neighbours up to ties; faster for small clouds)."""
    return n * m > TREE_PAIRS[device.type if device.type in TREE_PAIRS else "cpu"]


def _nn_sq_tree(pred: Tensor, gt: Tensor, gt_tree: dict | None = None) -> tuple[Tensor, Tensor]:
    """`_nn_sq` of one cloud pair [1,N,3], [1,M,3] (no autograd) by scipy cKDTree queries on all this process's
    threads; distances recomputed from the neighbours in the inputs' dtype, as `_nn_sq` does. `gt_tree` caches the
    gt's tree between calls on the same gt."""
    from scipy.spatial import cKDTree

    from affcli.common.threads import thread_budget

    check_xyz_shape(pred, "pred")
    check_xyz_shape(gt, "gt")
    if pred.shape[0] != 1 or gt.shape[0] != 1:
        raise PointCloudError(f"KD-tree nearest neighbours take one cloud pair, got batches {pred.shape[0]}, {gt.shape[0]}")
    p, g = pred[0].detach().cpu().double().numpy(), gt[0].detach().cpu().double().numpy()
    cache = {} if gt_tree is None else gt_tree
    if "tree" not in cache:
        cache["tree"] = cKDTree(g, balanced_tree=False, compact_nodes=False)
    workers = thread_budget()
    _, to_gt = cache["tree"].query(p, k=1, workers=workers)
    _, to_pred = cKDTree(p, balanced_tree=False, compact_nodes=False).query(g, k=1, workers=workers)
    dev = pred.device
    fwd = ((gt[0][torch.as_tensor(to_gt, device=dev)] - pred[0]) ** 2).sum(-1)
    bwd = ((pred[0][torch.as_tensor(to_pred, device=dev)] - gt[0]) ** 2).sum(-1)
    return fwd[None], bwd[None]


def _cd_hd(fwd: Tensor, bwd: Tensor, convention: str) -> tuple[float, float]:
    """Chamfer and Hausdorff (PU-GCN sum of squared maxima, or the textbook max distance) from one NN pass."""
    hd = torch.maximum(fwd.amax(), bwd.amax()).sqrt() if convention == "textbook" else fwd.amax() + bwd.amax()
    return float(fwd.mean() + bwd.mean()), float(hd)


def _reduce(x: Tensor, reduce: bool) -> Tensor:
    return x.mean() if reduce else x


def chamfer(pred: Tensor, gt: Tensor, reduce: bool = True) -> Tensor:
    """PU-GCN Chamfer: mean_pred min_gt d^2 + mean_gt min_pred d^2, per cloud [B], or its batch mean."""
    fwd, bwd = _nn_sq(pred, gt)
    return _reduce(fwd.mean(-1) + bwd.mean(-1), reduce)


def hausdorff(
    pred: Tensor, gt: Tensor, convention: Literal["pugcn", "textbook"] = "pugcn", reduce: bool = True
) -> Tensor:
    """Hausdorff per cloud [B] (or batch mean): 'pugcn' max d^2 + max d^2; 'textbook' max of the two max d."""
    fwd, bwd = _nn_sq(pred, gt)
    if convention == "pugcn":
        return _reduce(fwd.amax(-1) + bwd.amax(-1), reduce)
    if convention == "textbook":
        return _reduce(torch.maximum(fwd.amax(-1), bwd.amax(-1)).sqrt(), reduce)
    raise PointCloudError(f"hausdorff: convention must be 'pugcn' or 'textbook', got {convention!r}")


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den != 0, num / torch.where(den != 0, den, 1), 0)


def _triangle_constants(tri: Tensor) -> dict[str, Tensor]:
    """Per-triangle quantities [F,...] reused by every point: vertex a, edges, their dots, normal, bounding sphere.

    A zero-area triangle becomes its longest edge (p, q, q), for which the region tests reduce to the exact
    point-segment distance (Ericson's tests alone misfire on a zero-length edge)."""
    nrm = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flat = (nrm * nrm).sum(-1) == 0
    if bool(flat.any()):
        ends = torch.stack([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]], 1)
        longest = (ends[:, :, 1] - ends[:, :, 0]).norm(dim=-1).argmax(1)
        seg = ends[torch.arange(len(tri), device=tri.device), longest]
        tri = torch.where(flat[:, None, None], torch.stack([seg[:, 0], seg[:, 1], seg[:, 1]], 1), tri)
    a, ab, ac = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    centre = tri.mean(1)
    return {
        "a": a,
        "ab": ab,
        "ac": ac,
        "nrm": nrm,
        "ab2": (ab * ab).sum(-1),
        "ac2": (ac * ac).sum(-1),
        "abac": (ab * ac).sum(-1),
        "nn": (nrm * nrm).sum(-1),
        "centre": centre,
        "rad": (tri - centre.unsqueeze(1)).norm(dim=-1).amax(-1),
    }


def _closest_sq(p: Tensor, tc: dict[str, Tensor]) -> Tensor:
    """Squared distance from points p to triangles tc (broadcast shapes) by Ericson's region tests (RTCD 5.1.5).

    Interior points use the plane distance (ap.n)^2/|n|^2, edge and vertex regions the explicit difference,
    so no cancellation spoils points lying on the surface."""
    ap, ab, ac = p - tc["a"], tc["ab"], tc["ac"]
    d1 = (ap * ab).sum(-1)
    d2 = (ap * ac).sum(-1)
    d3, d4 = d1 - tc["ab2"], d2 - tc["abac"]
    d5, d6 = d1 - tc["abac"], d2 - tc["ac2"]
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    v = torch.zeros_like(d1)
    w = torch.zeros_like(d1)
    e_bc = _safe_div(d4 - d3, (d4 - d3) + (d5 - d6))
    in_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    v, w = torch.where(in_bc, 1 - e_bc, v), torch.where(in_bc, e_bc, w)
    in_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    v, w = torch.where(in_ac, 0, v), torch.where(in_ac, _safe_div(d2, d2 - d6), w)
    in_c = (d6 >= 0) & (d5 <= d6)
    v, w = torch.where(in_c, 0, v), torch.where(in_c, 1, w)
    in_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    v, w = torch.where(in_ab, _safe_div(d1, d1 - d3), v), torch.where(in_ab, 0, w)
    in_b = (d3 >= 0) & (d4 <= d3)
    v, w = torch.where(in_b, 1, v), torch.where(in_b, 0, w)
    in_a = (d1 <= 0) & (d2 <= 0)
    v, w = torch.where(in_a, 0, v), torch.where(in_a, 0, w)
    interior = ~(in_bc | in_ac | in_c | in_ab | in_b | in_a) & (tc["nn"] > 0)
    diff = ap - v.unsqueeze(-1) * ab - w.unsqueeze(-1) * ac
    plane = _safe_div((ap * tc["nrm"]).sum(-1) ** 2, tc["nn"])
    return torch.where(interior, plane, (diff * diff).sum(-1))


def _pairs_sq(points: Tensor, tc: dict[str, Tensor], pi: Tensor, ti: Tensor) -> Tensor:
    """Squared point-triangle distances for the pair list (pi, ti)."""
    return _closest_sq(points[pi], {k: v[ti] for k, v in tc.items()})


@torch.no_grad()
def point_to_mesh_distance(
    points: Tensor, vertices: Tensor, faces: Tensor, chunk: int | None = None, k_init: int = 8
) -> Tensor:
    """Exact Euclidean distance [N] of each point to the nearest triangle of the mesh.

    Per block of points, an upper bound from the k_init triangles with the nearest centres prunes every triangle
    whose bounding sphere lies farther; the survivors are tested exactly (an AABB tree's job, batched)."""
    check_xyz_shape(points, "points", batched=False)
    check_xyz_shape(vertices, "mesh vertices", batched=False)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0:
        raise PointCloudError(f"mesh faces: expected non-empty [F,3], got {list(faces.shape)}")
    faces = faces.to(points.device, torch.long)
    if int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]:
        raise PointCloudError(f"mesh faces: indices outside 0..{vertices.shape[0] - 1}")
    tc = _triangle_constants(vertices.to(points)[faces])
    n, f = points.shape[0], faces.shape[0]
    k0 = min(k_init, f)
    c_sq = (tc["centre"] ** 2).sum(-1)
    tol = 64 * torch.finfo(points.dtype).eps * float((points * points).sum(-1).amax() + c_sq.amax())
    best = torch.empty(n, dtype=points.dtype, device=points.device)
    rows = max(1, (chunk or PAIR_BLOCK.get(points.device.type, PAIR_BLOCK["cpu"])) // f)
    for s in range(0, n, rows):
        p = points[s : s + rows]
        d2 = (p * p).sum(-1, keepdim=True) + c_sq - 2.0 * p @ tc["centre"].T
        near = d2.topk(k0, dim=-1, largest=False).indices
        pi0 = torch.arange(len(p), device=p.device).repeat_interleave(k0)
        upper = _pairs_sq(p, tc, pi0, near.reshape(-1)).reshape(len(p), k0).amin(-1)
        lower = (d2 - tol).clamp_min(0).sqrt() - tc["rad"]
        pi, ti = (lower <= upper.sqrt()[:, None]).nonzero(as_tuple=True)
        best[s : s + rows] = upper.scatter_reduce(0, pi, _pairs_sq(p, tc, pi, ti), "amin")
    return best.sqrt()


CONVENTIONS = ("pugcn", "textbook", "half")


def _as_tensor(name: str, x: np.ndarray, device: torch.device, dtype: torch.dtype) -> Tensor:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape[0] == 0:
        raise PointCloudError(f"{name}: expected a non-empty [N,3] array, got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise PointCloudError(f"{name}: contains NaN or infinite coordinates")
    return torch.as_tensor(x, device=device).to(dtype)


def evaluate_clouds(
    pred: np.ndarray,
    gt: np.ndarray,
    mesh: tuple[np.ndarray, np.ndarray] | None = None,
    convention: Literal["pugcn", "textbook", "half"] = "pugcn",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    p2f_frame: Literal["gt", "mesh"] = "gt",
) -> dict[str, float | int | None]:
    """CD, HD and P2F of one shape in raw units (x1e3 for tables), following PU-GCN's evaluate.py.

    CD/HD: pred and gt each normalised to the unit sphere by their own centroid and radius (FORMATS.md);
    cd_gt/hd_gt: both mapped by the gt's centroid and radius (outliers in pred cannot shrink it).
    P2F: pred and mesh both mapped by the gt's transform (shared README; = mesh-unit distance / gt radius), or
    p2f_frame='mesh': in mesh units (PU-GCN's C++ tool); None without a mesh. 'half' halves CD and HD."""
    if convention not in CONVENTIONS:
        raise PointCloudError(f"evaluate_clouds: convention must be one of {CONVENTIONS}, got {convention!r}")
    if p2f_frame not in ("gt", "mesh"):
        raise PointCloudError(f"evaluate_clouds: p2f_frame must be 'gt' or 'mesh', got {p2f_frame!r}")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    p_raw, g_raw = _as_tensor("pred", pred, dev, dtype), _as_tensor("gt", gt, dev, dtype)
    p, _, _ = normalize_unit_sphere(p_raw[None])
    g, g_centroid, g_radius = normalize_unit_sphere(g_raw[None])
    nn = partial(_nn_sq_tree, gt_tree={}) if use_tree(len(pred), len(gt), dev) else _nn_sq
    cd, hd = _cd_hd(*nn(p, g), convention)
    cd_gt, hd_gt = _cd_hd(*nn((p_raw[None] - g_centroid) / g_radius, g), convention)
    if convention == "half":
        cd, hd, cd_gt, hd_gt = cd / 2, hd / 2, cd_gt / 2, hd_gt / 2
    out: dict[str, float | int | None] = {
        "cd": cd,
        "hd": hd,
        "p2f_mean": None,
        "p2f_std": None,
        "cd_gt": cd_gt,
        "hd_gt": hd_gt,
        "n_pred": len(pred),
        "n_gt": len(gt),
    }
    if mesh is not None:
        centre, scale = (g_centroid[0], g_radius[0]) if p2f_frame == "gt" else (0.0, 1.0)
        verts = (_as_tensor("mesh vertices", mesh[0], dev, dtype) - centre) / scale
        faces = torch.as_tensor(np.asarray(mesh[1]), device=dev, dtype=torch.long)
        d = point_to_mesh_distance((p_raw - centre) / scale, verts, faces)
        out["p2f_mean"], out["p2f_std"] = float(d.mean()), float(d.std(correction=0))
    return out


def _find(folder: Path, stem: str, exts: tuple[str, ...]) -> Path | None:
    return next((folder / f"{stem}{e}" for e in exts if (folder / f"{stem}{e}").is_file()), None)


def evaluate_folder(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    mesh_dir: str | os.PathLike | None = None,
    convention: Literal["pugcn", "textbook", "half"] = "pugcn",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    p2f_frame: Literal["gt", "mesh"] = "gt",
) -> pl.DataFrame:
    """One row per gt shape with a prediction of the same stem, plus a 'mean' row: CD and HD averaged over
    shapes, P2F pooled over all points of all shapes with a mesh (global mean and std, as FORMATS.md)."""
    import polars as pl

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    gts = sorted(p for p in gt_dir.iterdir() if p.suffix.lower() in CLOUD_EXTS) if gt_dir.is_dir() else []
    if not gts:
        raise PointCloudError(f"{gt_dir}: no ground-truth clouds ({', '.join(CLOUD_EXTS)})")
    missing = [g.stem for g in gts if _find(pred_dir, g.stem, CLOUD_EXTS) is None]
    if missing:
        raise PointCloudError(f"{pred_dir}: no prediction for {len(missing)} shape(s): {', '.join(missing[:5])}")
    rows = []
    for g in gts:
        mesh_path = _find(Path(mesh_dir), g.stem, MESH_EXTS) if mesh_dir else None
        res = evaluate_clouds(
            read_cloud(_find(pred_dir, g.stem, CLOUD_EXTS)),
            read_cloud(g),
            read_mesh(mesh_path) if mesh_path else None,
            convention,
            device,
            dtype,
            p2f_frame,
        )
        rows.append({"shape": g.stem, **res})
    schema = {"shape": pl.Utf8, "n_pred": pl.Int64, "n_gt": pl.Int64} | {k: pl.Float64 for k in SCORE_KEYS}
    schema = {k: schema[k] for k in ROW_COLUMNS}
    df = pl.DataFrame(rows, schema=schema)
    return pl.concat([df, pl.DataFrame([_pooled_row(df)], schema=schema)])


def _pooled_row(df: pl.DataFrame) -> dict[str, float | int | str | None]:
    """Mean CD/HD over shapes; P2F mean and std pooled over every point of the shapes that have a mesh."""
    m = df.filter(df["p2f_mean"].is_not_null())
    p2f_mean = p2f_std = None
    if m.height:
        n = m["n_pred"].to_numpy().astype(np.float64)
        mu, sd = m["p2f_mean"].to_numpy(), m["p2f_std"].to_numpy()
        p2f_mean = float((n * mu).sum() / n.sum())
        p2f_std = float(np.sqrt(max((n * (sd**2 + mu**2)).sum() / n.sum() - p2f_mean**2, 0.0)))
    return {
        "shape": "mean",
        "cd": float(df["cd"].mean()),
        "hd": float(df["hd"].mean()),
        "cd_gt": float(df["cd_gt"].mean()),
        "hd_gt": float(df["hd_gt"].mean()),
        "p2f_mean": p2f_mean,
        "p2f_std": p2f_std,
        "n_pred": int(df["n_pred"].sum()),
        "n_gt": int(df["n_gt"].sum()),
    }
