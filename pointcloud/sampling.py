"""Surface sampling of triangle meshes: area-weighted uniform, and Poisson-disk by weighted sample elimination."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from affcli.pointcloud.errors import PointCloudError

ALPHA, BETA, GAMMA = 8.0, 0.65, 1.5  # Yuksel 2015 weight exponent and weight-limiting constants


def _triangles(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangle corners [F,3,3] float64 and areas [F]; rejects meshes without faces or area."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] == 0:
        raise PointCloudError(f"mesh: expected non-empty faces [F,3], got shape {list(f.shape)}")
    if v.ndim != 2 or v.shape[1] != 3 or not np.isfinite(v).all():
        raise PointCloudError(f"mesh: expected finite vertices [V,3], got shape {list(v.shape)}")
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        raise PointCloudError("mesh: total surface area is zero")
    return tri, area


def mesh_area(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Total surface area of a triangle mesh."""
    return float(_triangles(vertices, faces)[1].sum())


def sample_surface_uniform(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n points [n,3] uniformly on the surface: triangles drawn by area, then uniform barycentrics."""
    tri, area = _triangles(vertices, faces)
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(area)
    pick = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(area) - 1)
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    t = tri[pick]
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])


def max_poisson_radius(area: float, n: int) -> float:
    """Largest Poisson-disk radius r_max of n samples on a surface of this area (hexagonal packing, spacing 2 r_max)."""
    return float(np.sqrt(area / (2.0 * np.sqrt(3.0) * n)))


def poisson_disk_radius(points: np.ndarray) -> float:
    """Poisson-disk radius of a point set: half its minimum pairwise Euclidean distance."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 2:
        raise PointCloudError(f"poisson_disk_radius: need at least 2 points, got {len(pts)}")
    d, _ = cKDTree(pts).query(pts, k=2)
    return float(d[:, 1].min() / 2)


def eliminate(points: np.ndarray, n: int, area: float, quantile: float | None = 0.97) -> np.ndarray:
    """Indices of n points kept by Yuksel's (2015) weighted sample elimination, vectorised in rounds of local maxima.

    quantile=None reproduces the greedy heap order exactly; 0.97 needs fewer rounds (docs/pointcloud_geometry.md)."""
    pts = np.asarray(points, dtype=np.float64)
    m = len(pts)
    if not 0 < n <= m:
        raise PointCloudError(f"eliminate: cannot keep {n} of {m} points")
    d_max = 2.0 * max_poisson_radius(area, n)
    d_min = d_max * (1.0 - (n / m) ** GAMMA) * BETA
    pairs = cKDTree(pts).query_pairs(d_max, output_type="ndarray")
    i, j = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    w_ij = (1.0 - np.maximum(np.linalg.norm(pts[i] - pts[j], axis=1), d_min) / d_max) ** ALPHA
    alive = np.ones(m, dtype=bool)
    to_remove = m - n
    while to_remove > 0:
        live = alive[i] & alive[j]
        i, j, w_ij = i[live], j[live], w_ij[live]
        weight = np.bincount(i, weights=w_ij, minlength=m)
        beaten = (weight[j] > weight[i]) | ((weight[j] == weight[i]) & (j > i))
        local_max = alive & (np.bincount(i[beaten], minlength=m) == 0)
        others = alive & ~local_max
        floor = weight[others].max() if others.any() else -1.0
        if quantile is not None:
            floor = min(floor, float(np.quantile(weight[alive], quantile)))
        cand = np.flatnonzero(local_max & (weight >= floor))
        if len(cand) > to_remove:
            cand = cand[np.argsort(-weight[cand], kind="stable")[:to_remove]]
        alive[cand] = False
        to_remove -= len(cand)
    return np.flatnonzero(alive)


def poisson_disk_sample(
    vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0, oversample: int = 5, quantile: float | None = 0.97
) -> np.ndarray:
    """Exactly n points [n,3] Poisson-disk on the surface: oversample x n uniform samples, then elimination.

    The achieved radius, poisson_disk_radius(result), is about 0.68 max_poisson_radius(area, n) (Yuksel's figure)."""
    if n < 1:
        raise PointCloudError(f"poisson_disk_sample: n must be >= 1, got {n}")
    area = mesh_area(vertices, faces)
    dense = sample_surface_uniform(vertices, faces, oversample * n, seed)
    return dense[eliminate(dense, n, area, quantile)]
