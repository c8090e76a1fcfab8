"""Readers and writers for clouds (.xyz, .ply, KITTI .bin, .npy) and meshes (.off, .obj, .ply).

Small hand readers rather than trimesh/open3d: four text/binary layouts need ~150 lines, no extra
dependency, and errors that name the file and the problem."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from affcli.pointcloud.errors import PointCloudError, reading

PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
    "half": "f2",
    "float16": "f2",
}


def _path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise PointCloudError(f"{path}: no such file")
    return path


def _check_points(path: Path, xyz: np.ndarray) -> np.ndarray:
    if xyz.shape[0] == 0:
        raise PointCloudError(f"{path}: empty point cloud")
    if not np.isfinite(xyz).all():
        raise PointCloudError(f"{path}: contains NaN or infinite coordinates")
    return xyz


def _text_table(path: Path, lines: list[str]) -> np.ndarray:
    """Parse whitespace/comma separated numeric lines with a common column count into [rows, cols] float64."""
    rows = [ln.replace(",", " ") for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        return np.zeros((0, 3))
    ncol = len(rows[0].split())
    try:
        flat = np.array(" ".join(rows).split(), dtype=np.float64)
    except ValueError as e:
        raise PointCloudError(f"{path}: non-numeric value ({e})") from None
    if ncol < 3 or flat.size != ncol * len(rows):
        raise PointCloudError(f"{path}: expected rows of the same >= 3 numbers (x y z ...), first row has {ncol}")
    return flat.reshape(len(rows), ncol)


def _read_ply(path: Path) -> dict[str, np.ndarray]:
    """Vertex table [V, props] (x,y,z first) and, if present, faces as a list of polygons (int64 arrays); a malformed,
    truncated or unsupported file is one PointCloudError naming it."""
    try:
        return _parse_ply(path)
    except PointCloudError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError) as e:
        detail = f"unknown property type {e.args[0]!r}" if isinstance(e, KeyError) else " ".join(str(e).split())[:160]
        raise PointCloudError(f"{path}: malformed or truncated PLY ({detail})") from None


def _parse_ply(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise PointCloudError(f"{path}: not a PLY file (missing 'ply' magic or end_header)")
    body_start = raw.index(b"\n", end) + 1
    header = raw[:end].decode("ascii", "replace").splitlines()
    fmt, elements = "ascii", []
    for line in header:
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append({"name": tok[1], "count": int(tok[2]), "props": []})
        elif tok[0] == "property" and elements:
            elements[-1]["props"].append(tok[1:])
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PointCloudError(f"{path}: unsupported PLY format {fmt!r}")
    out: dict[str, np.ndarray] = {}
    if fmt == "ascii":
        lines = raw[body_start:].decode("ascii", "replace").splitlines()
        pos = 0
        for el in elements:
            chunk = lines[pos : pos + el["count"]]
            pos += el["count"]
            if el["name"] == "vertex":
                names = [p[-1] for p in el["props"]]
                table = _text_table(path, chunk) if chunk else np.zeros((0, len(names)))
                out["vertex"] = table[:, [names.index(c) for c in "xyz"]] if chunk else np.zeros((0, 3))
            elif el["name"] == "face":
                out["face"] = _polygon_lines(path, chunk)
            elif el["name"] == "tristrips":
                out["tristrips"] = _strips(_polygon_lines(path, chunk))
        return out
    order = "<" if fmt == "binary_little_endian" else ">"
    buf, pos = memoryview(raw)[body_start:], 0
    for el in elements:
        props = el["props"]
        if all(p[0] != "list" for p in props):
            dt = np.dtype([(p[-1], order + PLY_TYPES[p[0]]) for p in props])
            table = np.frombuffer(buf, dt, el["count"], pos)
            pos += dt.itemsize * el["count"]
            if el["name"] == "vertex":
                out["vertex"] = np.stack([table[c].astype(np.float64) for c in "xyz"], 1)
        elif el["name"] in ("face", "tristrips") and len(props) == 1:
            _, ctype, itype, _ = props[0]
            lists, pos = _ply_binary_faces(
                path, buf, pos, el["count"], order + PLY_TYPES[ctype], order + PLY_TYPES[itype]
            )
            out[el["name"]] = _strips(lists) if el["name"] == "tristrips" else lists
        else:
            raise PointCloudError(f"{path}: unsupported binary PLY element {el['name']!r} with list properties")
    return out


def _ply_binary_faces(path: Path, buf, pos: int, count: int, ctype: str, itype: str):
    """Binary face lists: one strided read when every face has the first face's vertex count."""
    cs, isz = np.dtype(ctype).itemsize, np.dtype(itype).itemsize
    if count == 0:
        return np.zeros((0, 3), np.int64), pos
    k = int(np.frombuffer(buf, ctype, 1, pos)[0])
    dt = np.dtype([("n", ctype), ("v", itype, (k,))])
    if pos + dt.itemsize * count <= len(buf):
        table = np.frombuffer(buf, dt, count, pos)
        if (table["n"] == k).all():
            return table["v"].astype(np.int64), pos + dt.itemsize * count
    polys = []
    for _ in range(count):
        k = int(np.frombuffer(buf, ctype, 1, pos)[0])
        polys.append(np.frombuffer(buf, itype, k, pos + cs).astype(np.int64))
        pos += cs + k * isz
    return polys, pos


def _strips(strips) -> np.ndarray:
    """Triangles [F,3] of PLY triangle strips (-1 restarts a strip; odd triangles flipped to keep the winding;
    degenerate triangles, two equal corners, dropped)."""
    idx = np.concatenate([np.append(np.asarray(s, np.int64), -1) for s in strips])
    cut = np.flatnonzero(idx < 0)
    start = np.zeros(len(idx), np.int64)
    start[cut[:-1] + 1] = cut[:-1] + 1
    start = np.maximum.accumulate(start)
    a, b, c = idx[:-2], idx[1:-1], idx[2:]
    odd = (np.arange(len(a)) - start[:-2]) % 2 == 1
    tri = np.stack([np.where(odd, b, a), np.where(odd, a, b), c], 1)
    keep = (a >= 0) & (b >= 0) & (c >= 0) & (a != b) & (b != c) & (a != c)
    return tri[keep]


def _fan(path: Path, polys, n_vertices: int) -> np.ndarray:
    """Triangulate polygons (an [F,k] array or a list of index arrays) by fans from their first vertex."""
    groups = [polys] if isinstance(polys, np.ndarray) else _group_by_size(polys)
    tris = []
    for g in groups:
        if g.shape[0] == 0:
            continue
        if g.shape[1] < 3:
            raise PointCloudError(f"{path}: face with fewer than 3 vertices")
        k = g.shape[1]
        tris.append(np.stack([np.repeat(g[:, :1], k - 2, 1), g[:, 1:-1], g[:, 2:]], -1).reshape(-1, 3))
    faces = np.concatenate(tris) if tris else np.zeros((0, 3), np.int64)
    if faces.shape[0] == 0:
        raise PointCloudError(f"{path}: mesh has no faces")
    if faces.min() < 0 or faces.max() >= n_vertices:
        raise PointCloudError(f"{path}: face index outside 0..{n_vertices - 1}")
    return faces.astype(np.int64)


def _group_by_size(polys: list[np.ndarray]) -> list[np.ndarray]:
    sizes = np.array([len(p) for p in polys])
    return [np.stack([polys[i] for i in np.flatnonzero(sizes == k)]) for k in np.unique(sizes)]


def _polygon_lines(path: Path, lines: list[str]) -> np.ndarray | list[np.ndarray]:
    """Face lines 'k i1 .. ik [extra]': one [F,k] array when all share k and width, else a list of index arrays."""
    if not lines:
        return np.zeros((0, 3), np.int64)
    first = lines[0].split()
    try:
        table = np.array(" ".join(lines).split(), dtype=np.int64).reshape(len(lines), len(first))
        if (table[:, 0] == int(first[0])).all():
            return table[:, 1 : 1 + int(first[0])]
    except ValueError:
        pass
    try:
        return [np.array(ln.split()[1 : 1 + int(ln.split()[0])], dtype=np.int64) for ln in lines]
    except (ValueError, IndexError):
        raise PointCloudError(f"{path}: malformed face line") from None


def _read_off(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """OFF with counts on the second line or on the first after the keyword; faces 'k i1..ik [colour]'."""
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].upper().lstrip("CN").startswith("OFF"):
        raise PointCloudError(f"{path}: not an OFF file (missing OFF keyword)")
    head = lines[0].split()[1:]
    rest = lines[1:]
    if not head:
        if not rest:
            raise PointCloudError(f"{path}: OFF file without vertex/face counts")
        head, rest = rest[0].split(), rest[1:]
    try:
        nv, nf = int(head[0]), int(head[1])
    except (ValueError, IndexError):
        raise PointCloudError(f"{path}: bad OFF counts line {' '.join(head)!r}") from None
    if len(rest) < nv + nf:
        raise PointCloudError(f"{path}: OFF declares {nv} vertices and {nf} faces but has {len(rest)} data lines")
    v = _text_table(path, rest[:nv])[:, :3] if nv else np.zeros((0, 3))
    if nf == 0:
        raise PointCloudError(f"{path}: mesh has no faces")
    polys = _polygon_lines(path, rest[nv : nv + nf])
    return v, _fan(path, polys, len(v))


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """OBJ 'v x y z' and 'f a/b/c ...' lines (1-based, negative relative indices); polygons fan-triangulated."""
    verts, polys = [], []
    for line in path.read_text().splitlines():
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "v":
            verts.append(line)
        elif tok[0] == "f":
            idx = np.array([int(t.split("/")[0]) for t in tok[1:]], dtype=np.int64)
            polys.append(np.where(idx < 0, len(verts) + idx, idx - 1))
    v = _text_table(path, [ln.split(None, 1)[1] for ln in verts])[:, :3] if verts else np.zeros((0, 3))
    return v, _fan(path, polys, len(v))


def read_cloud(path: str | os.PathLike) -> np.ndarray:
    """Points [N,3] float32 from .xyz/.txt/.pts (extra columns such as normals dropped), .ply, KITTI .bin or .npy."""
    path = _path(path)
    ext = path.suffix.lower()
    if ext in (".xyz", ".txt", ".pts"):
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError:
            raise PointCloudError(f"{path}: not a text point cloud (binary bytes)") from None
        xyz = _text_table(path, lines)[:, :3]
    elif ext == ".ply":
        xyz = _read_ply(path).get("vertex", np.zeros((0, 3)))
    elif ext == ".bin":
        raw = np.fromfile(path, dtype="<f4")
        if raw.size % 4:
            raise PointCloudError(
                f"{path}: KITTI .bin size {raw.size * 4} bytes is not a multiple of 16 (x y z r float32)"
            )
        xyz = raw.reshape(-1, 4)[:, :3]
    elif ext == ".npy":
        try:
            xyz = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise PointCloudError(f"{path}: not a numeric .npy array ({' '.join(str(e).split())[:160]})") from None
        if not isinstance(xyz, np.ndarray) or xyz.dtype.kind not in "fiu":
            raise PointCloudError(f"{path}: expected a numeric [N,>=3] array, got dtype {getattr(xyz, 'dtype', None)}")
        if xyz.ndim != 2 or xyz.shape[1] < 3:
            raise PointCloudError(f"{path}: expected an [N,>=3] array, got shape {list(xyz.shape)}")
        xyz = xyz[:, :3]
    else:
        raise PointCloudError(f"{path}: unknown point-cloud extension {ext!r} (use .xyz, .ply, .bin, .npy)")
    _check_points(path, xyz)
    if xyz.dtype != np.float32 and xyz.size and np.abs(xyz).max() > np.finfo(np.float32).max:
        raise PointCloudError(f"{path}: coordinates beyond the float32 range (|x| > 3.4e38)")
    return np.ascontiguousarray(xyz, dtype=np.float32)


def write_cloud(path: str | os.PathLike, xyz: np.ndarray, binary: bool = True) -> None:
    """Write points [N,3] as .xyz (6 decimals, as the PU-GAN files), .ply (binary float32 or ascii) or .npy."""
    path = Path(path)
    xyz = np.asarray(xyz, dtype=np.float32)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise PointCloudError(f"{path}: expected points [N,3] to write, got shape {list(xyz.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    if ext in (".xyz", ".txt", ".pts"):
        np.savetxt(path, xyz, fmt="%.6f")
    elif ext == ".ply":
        fmt = "binary_little_endian" if binary else "ascii"
        props = "".join(f"property float {c}\n" for c in "xyz")
        head = f"ply\nformat {fmt} 1.0\nelement vertex {len(xyz)}\n{props}end_header\n"
        with open(path, "wb") as fh:
            fh.write(head.encode())
            if binary:
                fh.write(xyz.astype("<f4").tobytes())
            else:
                np.savetxt(fh, xyz, fmt="%.7g")
    elif ext == ".npy":
        np.save(path, xyz)
    else:
        raise PointCloudError(f"{path}: unknown point-cloud extension {ext!r} (use .xyz, .ply, .npy)")


def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh (vertices [V,3] float64, faces [F,3] int64) from .off, .obj or .ply; polygons fan-triangulated."""
    path = _path(path)
    ext = path.suffix.lower()
    if ext == ".off":
        with reading(path, "OFF mesh"):
            v, f = _read_off(path)
    elif ext == ".obj":
        with reading(path, "OBJ mesh"):
            v, f = _read_obj(path)
    elif ext == ".ply":
        ply = _read_ply(path)
        v = ply.get("vertex", np.zeros((0, 3)))
        if "face" not in ply and "tristrips" not in ply:
            raise PointCloudError(f"{path}: mesh has no faces")
        f = _fan(path, ply["face"] if "face" in ply else ply["tristrips"], len(v))
    else:
        raise PointCloudError(f"{path}: unknown mesh extension {ext!r} (use .off, .obj, .ply)")
    _check_points(path, v)
    return np.ascontiguousarray(v, dtype=np.float64), f


def write_mesh(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write a triangle mesh as .off or .obj (full float precision)."""
    path = Path(path)
    v, f = np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise PointCloudError(
            f"{path}: expected vertices [V,3] and non-empty faces [F,3], got {list(v.shape)}, {list(f.shape)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    if ext == ".off":
        body = [f"OFF\n{len(v)} {len(f)} 0"]
        body += [" ".join(f"{x:.17g}" for x in row) for row in v]
        body += ["3 " + " ".join(map(str, row)) for row in f]
    elif ext == ".obj":
        body = ["v " + " ".join(f"{x:.17g}" for x in row) for row in v]
        body += ["f " + " ".join(str(i + 1) for i in row) for row in f]
    else:
        raise PointCloudError(f"{path}: unknown mesh extension {ext!r} (use .off, .obj)")
    path.write_text("\n".join(body) + "\n")
