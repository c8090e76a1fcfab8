"""Train/test overlap checks: training shape names, geometry hashes and fingerprints recorded in the data file,
compared with a test folder's shape names, meshes and ground-truth clouds before an evaluation is trusted."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy.spatial import cKDTree

from affcli.common.runs import check_run_file
from affcli.pointcloud.errors import PointCloudError, reading
from affcli.pointcloud.sampling import sample_surface_uniform

FINGERPRINT_POINTS = 512
MATCH_DISTANCE = 0.03  # mean fingerprint-to-cloud distance (unit sphere): same shape 0.012-0.017, others >= 0.051


def canonical_name(name: str) -> str:
    """Shape name compared case- and separator-insensitively: 'Stanford_Bunny.obj' == 'stanford-bunny'."""
    return re.sub(r"[^a-z0-9]", "", Path(name).stem.lower())


def _unit(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, np.float64)
    p = p - p.mean(0)
    return p / max(float(np.linalg.norm(p, axis=1).max()), 1e-12)


def geometry_hash(vertices: np.ndarray, faces: np.ndarray) -> str:
    """Hash of a mesh's geometry independent of file format, vertex order, position and scale."""
    v = np.round(_unit(vertices), 5) + 0.0
    v = v[np.lexsort(v.T[::-1])]
    h = hashlib.sha256(v.astype("<f8").tobytes())
    h.update(str(len(faces)).encode())
    return h.hexdigest()[:16]


def fingerprint(vertices: np.ndarray, faces: np.ndarray, seed: int = 0) -> np.ndarray:
    """FINGERPRINT_POINTS uniform surface points on the unit sphere (centroid, max radius): float32 [P,3]."""
    return _unit(sample_surface_uniform(vertices, faces, FINGERPRINT_POINTS, seed)).astype(np.float32)


def read_record(data: str | os.PathLike) -> dict[str, Any] | None:
    """Training shape names, hashes and fingerprints stored in a make-data HDF5; None when it has none."""
    path = Path(data)
    if not path.is_file():
        return None
    with reading(path, "HDF5 training file"), h5py.File(path, "r") as fh:
        if "meshes" not in fh.attrs:
            return None
        names = [str(n) for n in fh.attrs["meshes"]]
        hashes = [str(h) for h in fh.attrs["mesh_hashes"]] if "mesh_hashes" in fh.attrs else []
        prints = fh["fingerprints"][...] if "fingerprints" in fh else None
    return {"data": str(path), "names": names, "hashes": hashes, "fingerprints": prints}


def _cloud_distance(fp: np.ndarray, cloud: np.ndarray) -> np.ndarray:
    """Mean distance from each training fingerprint [T,P,3] to a test cloud (both on the unit sphere): [T]."""
    d, _ = cKDTree(_unit(cloud)).query(fp.reshape(-1, 3).astype(np.float64))
    return d.reshape(len(fp), -1).mean(1)


def find_overlap(
    record: dict[str, Any],
    test_names: list[str],
    test_clouds: dict[str, np.ndarray] | None = None,
    test_meshes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[dict[str, str]]:
    """Test shapes that also occur in the training data, by name, mesh geometry hash or cloud fingerprint."""
    train_names = {canonical_name(n): n for n in record["names"]}
    hashes = dict(zip(record["hashes"], record["names"]))
    found = []
    for name in test_names:
        if canonical_name(name) in train_names:
            found.append({"test": name, "train": train_names[canonical_name(name)], "by": "name"})
    for name, (v, f) in (test_meshes or {}).items():
        h = geometry_hash(v, f)
        if h in hashes:
            found.append({"test": name, "train": hashes[h], "by": "geometry hash"})
    fp = record.get("fingerprints")
    if fp is not None and len(fp):
        for name, cloud in (test_clouds or {}).items():
            d = _cloud_distance(fp, cloud)
            for k in np.flatnonzero(d < MATCH_DISTANCE):
                found.append({"test": name, "train": record["names"][k], "by": f"fingerprint ({d[k]:.4f})"})
    seen, unique = set(), []
    for row in found:
        key = (row["test"], row["train"])
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def run_record(run: str | os.PathLike) -> dict[str, Any] | None:
    """The training-data record of a run folder (its config.json names the data file); None if unknown."""
    import json

    run = Path(run)
    cfg = (run if run.is_dir() else run.parent) / "config.json"
    if not cfg.is_file():
        return None
    with reading(cfg, "run config (JSON)"):
        check_run_file(cfg)  # a ValueError naming the file, made one line by `reading`
        data = json.loads(cfg.read_text()).get("data")
    if data is not None and not isinstance(data, str):
        raise PointCloudError(f"{cfg}: 'data' should be a file name, got {type(data).__name__}")
    if data and not Path(data).is_absolute() and (cfg.parent / data).is_file():  # shipped: beside its config
        data = cfg.parent / data
    return read_record(data) if data else None


def overlap_report(
    run: str | os.PathLike, files: list[Path], gt_dir: Path, mesh_dir: Path | None
) -> dict[str, Any]:
    """Which test shapes (input files, their gt clouds and meshes) the run's training data also holds."""
    from affcli.pointcloud.io import read_cloud, read_mesh

    record = run_record(run)
    if record is None:
        return {"training_data": None, "checked": False, "overlap": []}
    clouds = {f.stem: read_cloud(p) for f in files for p in [gt_dir / f"{f.stem}{f.suffix}"] if p.is_file()}
    meshes = {}
    for f in files:
        for ext in (".off", ".obj", ".ply"):
            if mesh_dir is not None and (mesh_dir / f"{f.stem}{ext}").is_file():
                meshes[f.stem] = read_mesh(mesh_dir / f"{f.stem}{ext}")
                break
    found = find_overlap(record, [f.stem for f in files], clouds, meshes)
    return {"training_data": record["data"], "checked": True, "overlap": found, "train_shapes": len(record["names"])}


def overlap_line(leak: dict[str, Any]) -> str:
    """The one line `pc eval` prints about an `overlap_report`: not checked (a warning), the overlapping shapes, or
    how many training shapes were checked."""
    if not leak["checked"]:
        return ("warning: the run's training data (config.json 'data') is missing or has no shape record (make it with "
                "`affcli pc make-data`): train/test overlap not checked")
    if leak["overlap"]:
        return (f"OVERLAP: {len(leak['overlap'])} test shape(s) in the training data: "
                + ", ".join(f"{o['test']}={o['train']} ({o['by']})" for o in leak["overlap"]))
    return f"no train/test overlap ({leak['train_shapes']} training shapes checked)"
