"""Procedural training shapes as triangle meshes: superquadrics, tori, CSG of primitives, revolutions and
extrusions of random profiles, displaced smoothed spheres, sharp CAD-like parts and thin sheets.

Every shape is closed (each directed edge has its reverse), finite and normalised to the unit sphere, so
the Poisson-disk patch maker samples them like the meshes on disk; none resembles a PU-GAN test shape
by construction (random parameters, names `proc_<kind>_<i>`)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from affcli.pointcloud.errors import PointCloudError

Mesh = tuple[np.ndarray, np.ndarray]


def icosphere(subdiv: int = 4) -> Mesh:
    """Unit icosphere: 20 * 4**subdiv triangles, closed, outward winding."""
    t = (1 + 5**0.5) / 2
    v = np.array(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
         [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    f = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6],
         [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
         [8, 6, 7], [9, 8, 1]])
    for _ in range(subdiv):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        mid = len(v) + inv.reshape(3, -1).T
        v = np.concatenate([v, (v[uniq[:, 0]] + v[uniq[:, 1]]) / 2])
        a, b, c = f.T
        ab, bc, ca = mid.T
        f = np.concatenate([np.stack(x, 1) for x in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    return v / np.linalg.norm(v, axis=1, keepdims=True), f


def grid_faces(nu: int, nv: int, wrap_u: bool, wrap_v: bool) -> np.ndarray:
    """Triangles of an nu x nv vertex grid (vertex u*nv+v), optionally wrapping in u and/or v."""
    us = np.arange(nu if wrap_u else nu - 1)
    vs = np.arange(nv if wrap_v else nv - 1)
    u, v = np.meshgrid(us, vs, indexing="ij")
    u, v = u.ravel(), v.ravel()
    a, b = u * nv + v, ((u + 1) % nu) * nv + v
    c, d = ((u + 1) % nu) * nv + (v + 1) % nv, u * nv + (v + 1) % nv
    return np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def _cap(ring: np.ndarray, centre: int, flip: bool) -> np.ndarray:
    """Fan of triangles closing a vertex ring around one centre vertex."""
    nxt = np.roll(ring, -1)
    tri = np.stack([np.full_like(ring, centre), ring, nxt], 1)
    return tri[:, ::-1] if flip else tri


def superquadric(rng: np.random.Generator) -> Mesh:
    """Superellipsoid: icosphere directions scaled onto |x/a|^(2/e2)+|y/b|^(2/e2))^(e2/e1)+|z/c|^(2/e1) = 1."""
    d, f = icosphere(4)
    a, b, c = rng.uniform(0.4, 1.0, 3)
    e1, e2 = rng.uniform(0.2, 1.6, 2)
    x, y, z = np.abs(d / [a, b, c]).T + 1e-12
    g = (x ** (2 / e2) + y ** (2 / e2)) ** (e2 / e1) + z ** (2 / e1)
    return d * g[:, None] ** (-e1 / 2), f


def torus(rng: np.random.Generator) -> Mesh:
    """Torus with an elliptic, optionally wavy tube; both grid directions wrap."""
    nu, nv = 96, 32
    big, small = rng.uniform(0.6, 1.0), rng.uniform(0.12, 0.4)
    squash, waves, amp = rng.uniform(0.5, 1.5), rng.integers(0, 5), rng.uniform(0, 0.3)
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, nu, endpoint=False), np.linspace(0, 2 * np.pi, nv, endpoint=False),
                       indexing="ij")
    r = small * (1 + amp * np.sin(waves * u))
    pts = np.stack([(big + r * np.cos(v)) * np.cos(u), (big + r * np.cos(v)) * np.sin(u), squash * r * np.sin(v)], -1)
    return pts.reshape(-1, 3), grid_faces(nu, nv, True, True)


def revolution(rng: np.random.Generator) -> Mesh:
    """Surface of revolution of a random smooth profile radius r(t) > 0, closed by two pole vertices."""
    nu, nv = 72, 48
    t = np.linspace(0, 1, nv + 2)[1:-1]
    k = np.arange(1, 5)
    coef = rng.normal(0, 1, 4) / k**1.5
    prof = 0.6 + 0.25 * (np.sin(np.pi * np.outer(t, k) + rng.uniform(0, np.pi, 4)) @ coef)
    r = np.clip(prof, 0.15, None) * np.sin(np.pi * t) ** rng.uniform(0.3, 0.8)
    z = rng.uniform(0.8, 2.0) * (t - 0.5)
    ang = np.linspace(0, 2 * np.pi, nu, endpoint=False)
    pts = np.stack([np.outer(np.cos(ang), r), np.outer(np.sin(ang), r), np.broadcast_to(z, (nu, nv))], -1)
    v = np.concatenate([pts.reshape(-1, 3), [[0, 0, z[0] - 0.02], [0, 0, z[-1] + 0.02]]])
    lo, hi = nu * nv, nu * nv + 1
    faces = [grid_faces(nu, nv, True, False)[:, ::-1], _cap(np.arange(nu) * nv, lo, False),
             _cap(np.arange(nu) * nv + nv - 1, hi, True)]
    return v, np.concatenate(faces)


def _extrude(poly: np.ndarray, height: float, layers: int = 8, twist: float = 0.0, taper: float = 0.0) -> Mesh:
    """Prism of a star-shaped polygon (around the origin, counter-clockwise), with side layers, twist and taper."""
    m = len(poly)
    z = np.linspace(-height / 2, height / 2, layers + 1)
    rings = []
    for s, zz in zip(np.linspace(0, 1, layers + 1), z):
        c, sn, sc = np.cos(twist * s), np.sin(twist * s), 1 - taper * s
        rot = poly @ np.array([[c, sn], [-sn, c]]) * sc
        rings.append(np.column_stack([rot, np.full(m, zz)]))
    v = np.concatenate(rings + [[[0, 0, z[0]], [0, 0, z[-1]]]])
    side = grid_faces(layers + 1, m, False, True)
    side = np.column_stack([side[:, 0], side[:, 2], side[:, 1]])
    bottom = _cap(np.arange(m), len(v) - 2, True)
    top = _cap(np.arange(m) + layers * m, len(v) - 1, False)
    return v, np.concatenate([side, bottom, top])


def extrusion(rng: np.random.Generator) -> Mesh:
    """Extruded random star-shaped polygon (smooth or jagged profile), optionally twisted and tapered."""
    m = int(rng.integers(5, 13))
    ang = np.sort(rng.uniform(0, 2 * np.pi, m)) if rng.random() < 0.5 else np.linspace(0, 2 * np.pi, m, endpoint=False)
    rad = rng.uniform(0.4, 1.0, m)
    if rng.random() < 0.5:
        fine = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        rad = np.interp(fine, np.append(ang, ang[0] + 2 * np.pi), np.append(rad, rad[0]), period=2 * np.pi)
        ang = fine
    poly = np.column_stack([rad * np.cos(ang), rad * np.sin(ang)])
    twist = rng.uniform(-1.0, 1.0) if rng.random() < 0.4 else 0.0
    return _extrude(poly, rng.uniform(0.3, 1.6), 8, twist, rng.uniform(0, 0.5) if rng.random() < 0.4 else 0.0)


def blob(rng: np.random.Generator) -> Mesh:
    """Sphere displaced by a smooth random field (sum of von Mises bumps), then Laplacian-smoothed."""
    d, f = icosphere(4)
    k = int(rng.integers(3, 12))
    centres = rng.normal(size=(k, 3))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    kappa, amp = rng.uniform(2, 12, k), rng.uniform(-0.35, 0.5, k)
    r = 1 + (np.exp(kappa * (d @ centres.T - 1)) * amp).sum(1)
    v = d * np.clip(r, 0.3, None)[:, None]
    nbr = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    deg = np.bincount(nbr[:, 0], minlength=len(v))
    for _ in range(int(rng.integers(2, 8))):
        acc = np.zeros_like(v)
        np.add.at(acc, nbr[:, 0], v[nbr[:, 1]])
        v = 0.5 * v + 0.5 * acc / deg[:, None]
    return v, f


def _box_union_boundary(occ: np.ndarray, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> Mesh:
    """Boundary quads (as triangles) of a union of cells of a rectilinear grid; lattice vertices shared."""
    nx, ny, nz = occ.shape
    pad = np.pad(occ, 1)
    vid = lambda i, j, k: (i * (ny + 1) + j) * (nz + 1) + k  # noqa: E731
    faces = []
    for axis in range(3):
        diff = pad[1:, 1:-1, 1:-1].astype(int) - pad[:-1, 1:-1, 1:-1] if axis == 0 else (
            pad[1:-1, 1:, 1:-1].astype(int) - pad[1:-1, :-1, 1:-1] if axis == 1
            else pad[1:-1, 1:-1, 1:].astype(int) - pad[1:-1, 1:-1, :-1])
        for sign in (1, -1):
            i, j, k = np.nonzero(diff == sign)
            o = np.zeros_like(i)
            e = np.ones_like(i)
            if axis == 0:
                q = [vid(i, j, k), vid(i, j + e, k), vid(i, j + e, k + e), vid(i, j, k + e)]
            elif axis == 1:
                q = [vid(i, j, k), vid(i, j, k + e), vid(i + e, j, k + e), vid(i + e, j, k + o)]
            else:
                q = [vid(i, j, k), vid(i + e, j, k), vid(i + e, j + e, k), vid(i, j + e, k)]
            q = np.stack(q, 1)
            if sign == 1:  # occupied cell on the low side: face points to +axis
                q = q[:, ::-1]
            faces.append(np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]]))
    gx, gy, gz = np.meshgrid(xs, ys, zs, indexing="ij")
    v = np.stack([gx, gy, gz], -1).reshape(-1, 3)
    f = np.concatenate(faces)
    used = np.unique(f)
    remap = np.full(len(v), -1)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]


def cad_part(rng: np.random.Generator) -> Mesh:
    """Sharp-edged part: a connected union of cells of a random rectilinear grid (steps, slots, pockets)."""
    n = rng.integers(2, 6, 3)
    occ = np.zeros(n, bool)
    cur = tuple(rng.integers(0, n))
    occ[cur] = True
    for _ in range(int(rng.integers(3, n.prod() + 1))):
        step = np.zeros(3, int)
        step[rng.integers(3)] = rng.choice([-1, 1])
        cur = tuple(np.clip(np.array(cur) + step, 0, n - 1))
        occ[cur] = True
    if rng.random() < 0.5:
        occ |= occ[::-1]  # mirror symmetry, common in machined parts
    xs, ys, zs = (np.concatenate([[0], np.cumsum(rng.uniform(0.2, 1.0, k))]) for k in n)
    return _box_union_boundary(occ, xs, ys, zs)


def thin_sheet(rng: np.random.Generator) -> Mesh:
    """Thin curved plate: a random height field over a square, thickened by 2-5% of its size (closed slab)."""
    m = 40
    x, y = np.meshgrid(np.linspace(-1, 1, m), np.linspace(-1, 1, m), indexing="ij")
    h = np.zeros_like(x)
    for _ in range(3):
        fx, fy, ph = rng.uniform(0.3, 2.0), rng.uniform(0.3, 2.0), rng.uniform(0, 2 * np.pi)
        h += rng.uniform(0.05, 0.3) * np.sin(fx * x + fy * y + ph)
    h += rng.uniform(-0.4, 0.4) * x**2
    thick = rng.uniform(0.04, 0.1)
    top = np.stack([x, y, h + thick / 2], -1).reshape(-1, 3)
    bot = np.stack([x, y, h - thick / 2], -1).reshape(-1, 3)
    v = np.concatenate([top, bot])
    g = grid_faces(m, m, False, False)
    idx = np.arange(m * m).reshape(m, m)
    ring = np.concatenate([idx[0, :], idx[1:, -1], idx[-1, -2::-1], idx[-2:0:-1, 0]])
    nxt = np.roll(ring, -1)
    walls = np.concatenate([np.stack([ring, nxt, nxt + m * m], 1), np.stack([ring, nxt + m * m, ring + m * m], 1)])
    return v, np.concatenate([g, g[:, ::-1] + m * m, walls])


def csg(rng: np.random.Generator, res: int = 56) -> Mesh:
    """Union / difference / intersection of random spheres, boxes, cylinders and tori as a signed-distance
    field, meshed by marching cubes (closed: the field is positive on the padded border)."""
    from skimage.measure import marching_cubes

    g = np.linspace(-1.3, 1.3, res)
    p = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1)

    def prim() -> np.ndarray:
        kind = rng.integers(4)
        q = p - rng.uniform(-0.4, 0.4, 3)
        a = rng.normal(size=(3, 3))
        rot = np.linalg.qr(a)[0]
        q = q @ rot
        if kind == 0:
            return np.linalg.norm(q, axis=-1) - rng.uniform(0.3, 0.8)
        if kind == 1:
            d = np.abs(q) - rng.uniform(0.2, 0.7, 3)
            return np.linalg.norm(np.maximum(d, 0), axis=-1) + np.minimum(d.max(-1), 0)
        if kind == 2:
            rad, half = rng.uniform(0.15, 0.5), rng.uniform(0.3, 0.9)
            d = np.stack([np.linalg.norm(q[..., :2], axis=-1) - rad, np.abs(q[..., 2]) - half], -1)
            return np.linalg.norm(np.maximum(d, 0), axis=-1) + np.minimum(d.max(-1), 0)
        big, small = rng.uniform(0.4, 0.8), rng.uniform(0.1, 0.25)
        return np.hypot(np.linalg.norm(q[..., :2], axis=-1) - big, q[..., 2]) - small

    sdf = prim()
    for _ in range(int(rng.integers(1, 4))):
        op, other = rng.choice(["union", "union", "difference", "intersection"]), prim()
        new = (np.minimum(sdf, other) if op == "union" else np.maximum(sdf, -other) if op == "difference"
               else np.maximum(sdf, other))
        if (new < 0).sum() > 0.01 * new.size:
            sdf = new
    sdf = np.pad(sdf, 1, constant_values=1.0)
    v, f, _, _ = marching_cubes(sdf, 0.0, spacing=(g[1] - g[0],) * 3)
    return v, f[:, ::-1].astype(np.int64)


KINDS: dict[str, Callable[[np.random.Generator], Mesh]] = {
    "superquadric": superquadric,
    "torus": torus,
    "csg": csg,
    "revolution": revolution,
    "extrusion": extrusion,
    "blob": blob,
    "cad": cad_part,
    "sheet": thin_sheet,
}


def normalise(v: np.ndarray) -> np.ndarray:
    """Vertices moved to their centroid and scaled to unit max radius."""
    v = v - v.mean(0)
    return v / np.linalg.norm(v, axis=1).max()


def make_shape(kind: str, seed: int) -> Mesh:
    """One procedural mesh (vertices [V,3] float64 on the unit sphere, faces [F,3] int64) of a kind, reproducibly."""
    if kind not in KINDS:
        raise PointCloudError(f"procedural: unknown shape kind {kind!r} (one of {', '.join(KINDS)})")
    v, f = KINDS[kind](np.random.default_rng(seed))
    v, f = normalise(np.asarray(v, np.float64)), np.ascontiguousarray(f, np.int64)
    return v, (f if signed_volume(v, f) >= 0 else f[:, ::-1].copy())


def signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    """Enclosed volume of a closed mesh, positive when its faces wind outwards."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def procedural_shapes(n: int, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """n shapes (name, vertices, faces), the kinds in turn: `proc_<kind>_<i>`."""
    if n < 0:
        raise PointCloudError(f"procedural: shape count must be >= 0, got {n}")
    kinds = list(KINDS)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        v, f = make_shape(kind, seed * 1_000_003 + i)
        out.append((f"proc_{kind}_{i:04d}", v, f))
    return out


def is_closed(faces: np.ndarray) -> bool:
    """True when every directed edge has its reverse as often (watertight, consistently oriented)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    n = int(e.max()) + 1
    fwd = np.sort(e[:, 0] * n + e[:, 1])
    rev = np.sort(e[:, 1] * n + e[:, 0])
    return bool(np.array_equal(fwd, rev))
