"""PU-GAN-format data: read and build the HDF5 training patches, build Poisson-disk test pairs, batch augmentation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Literal

import h5py
import numpy as np
import torch
from torch import Tensor

from affcli.common.progress import progress_bar
from affcli.pointcloud.errors import PointCloudError, reading
from affcli.pointcloud.io import read_cloud, read_mesh, write_cloud
from affcli.pointcloud.leak import find_overlap, fingerprint, geometry_hash
from affcli.pointcloud.metrics import CLOUD_EXTS
from affcli.pointcloud.ops import farthest_point_sample, gather_points, knn, normalize_unit_sphere
from affcli.pointcloud.procedural import KINDS, make_shape
from affcli.pointcloud.sampling import eliminate, poisson_disk_sample

MESH_EXTS = (".off", ".obj", ".ply")
MAX_H5_BYTES = 16 << 30  # a training dataset larger than this (as float32) is refused before it is read


def read_pugan_h5(
    path: str | os.PathLike, input_key: str = "poisson_256", gt_key: str = "poisson_1024"
) -> tuple[np.ndarray, np.ndarray]:
    """Input [P,n_in,3] and ground-truth [P,n_gt,3] float32 patches (xyz only) from a PU-GAN-style HDF5 file."""
    path = Path(path)
    if not path.is_file():
        raise PointCloudError(f"{path}: no such file")
    with reading(path, "HDF5 training file"), h5py.File(path, "r") as fh:
        missing = [k for k in (input_key, gt_key) if k not in fh]
        if missing:
            raise PointCloudError(f"{path}: no dataset {', '.join(missing)}; available: {', '.join(sorted(fh.keys()))}")
        arrays = []
        for key in (input_key, gt_key):
            ds = fh[key]
            if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiu":
                raise PointCloudError(f"{path}: {key} is not a numeric dataset")
            if ds.ndim != 3 or ds.shape[2] < 3 or ds.shape[0] == 0 or ds.shape[1] == 0:
                raise PointCloudError(f"{path}: dataset {key} should be [P,N,>=3], got {list(ds.shape)}")
            if ds.size * 4 > MAX_H5_BYTES:
                raise PointCloudError(f"{path}: dataset {key} declares {list(ds.shape)} ({ds.size * 4 / 2**30:.1f} GiB "
                                      f"as float32), over the {MAX_H5_BYTES / 2**30:g} GiB limit")
            arrays.append(ds[...])
    inp, gt = arrays
    if len(inp) != len(gt):
        raise PointCloudError(f"{path}: {input_key} has {len(inp)} patches but {gt_key} has {len(gt)}")
    return np.ascontiguousarray(inp[..., :3], np.float32), np.ascontiguousarray(gt[..., :3], np.float32)


def list_meshes(mesh_dir: str | os.PathLike) -> list[Path]:
    """Mesh files (.off/.obj/.ply) of a folder, sorted; error if there are none."""
    mesh_dir = Path(mesh_dir)
    files = sorted(p for p in mesh_dir.iterdir() if p.suffix.lower() in MESH_EXTS) if mesh_dir.is_dir() else []
    if not files:
        raise PointCloudError(f"{mesh_dir}: no meshes ({', '.join(MESH_EXTS)})")
    return files


def gaussian_index_sample(n_rows: int, num: int, k: int, generator: torch.Generator) -> Tensor:
    """Per row, k distinct indices of 0..num-1 drawn around a random centre (PU-GCN's nonuniform_sampling).

    The peers redraw int(N(loc, 0.3) * num), loc ~ U(0.1, 0.9), until k distinct ones are found: that is
    weighted sampling without replacement, done here in one shot with Gumbel top-k on the log density."""
    if not 0 < k <= num:
        raise PointCloudError(f"gaussian_index_sample: cannot draw {k} distinct indices of {num}")
    loc = torch.rand(n_rows, 1, generator=generator) * 0.8 + 0.1
    pos = (torch.arange(num, dtype=torch.float64) + 0.5) / num
    logw = -0.5 * ((pos - loc) / 0.3) ** 2
    gumbel = -torch.log(-torch.log(torch.rand(n_rows, num, generator=generator, dtype=torch.float64).clamp_min(1e-300)))
    return (logw + gumbel).topk(k, dim=-1).indices


def training_shapes(
    mesh_dirs: str | os.PathLike | list | None, procedural: int = 0, seed: int = 0
) -> list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]]]:
    """(name, loader) of every mesh in the folders plus `procedural` generated shapes; error if none."""
    dirs = [] if mesh_dirs is None else [mesh_dirs] if isinstance(mesh_dirs, (str, os.PathLike)) else list(mesh_dirs)
    shapes: list = [(m.stem, lambda m=m: read_mesh(m)) for d in dirs for m in list_meshes(d)]
    kinds = list(KINDS)
    for i in range(procedural):
        kind = kinds[i % len(kinds)]
        shapes.append((f"proc_{kind}_{i:04d}", lambda k=kind, i=i: make_shape(k, seed * 1_000_003 + i)))
    if not shapes:
        raise PointCloudError("make-data: no shapes (give a mesh folder and/or a procedural count)")
    names = [n for n, _ in shapes]
    if len(set(names)) != len(names):
        raise PointCloudError(f"make-data: duplicate shape names {sorted({n for n in names if names.count(n) > 1})}")
    return shapes


def _mesh_patches(
    v: np.ndarray, f: np.ndarray, patches: int, n_gt: int, n_in: int, n_dense: int, seed: int, input_sampling: str
) -> tuple[np.ndarray, np.ndarray]:
    """Patches of one mesh: Poisson-disk cloud, FPS seeds, kNN patches normalised to the unit sphere, sparse inputs."""
    dense = torch.from_numpy(poisson_disk_sample(v, f, n_dense, seed)).float()[None]
    gen = torch.Generator().manual_seed(seed)
    seeds = gather_points(dense, farthest_point_sample(dense, min(patches, n_dense), "random", gen))
    gt = gather_points(dense, knn(seeds, dense, n_gt)[1])[0]
    gt, _, _ = normalize_unit_sphere(gt)
    if input_sampling == "gaussian":
        idx = gaussian_index_sample(len(gt), n_gt, n_in, gen)
    else:
        idx = torch.stack([torch.from_numpy(eliminate(p, n_in, _patch_area(p))) for p in gt.double().numpy()])
    return gather_points(gt, idx).numpy(), gt.numpy()


def _patch_area(points: np.ndarray) -> float:
    """Surface area covered by a near-Poisson point set: points x hexagon cell of the mean nearest-neighbour spacing."""
    d = knn(torch.from_numpy(points)[None], torch.from_numpy(points)[None], 2)[0][0, :, 1].sqrt()
    return float(len(points) * np.sqrt(3) / 2 * d.mean() ** 2)


def make_pugan_h5(
    mesh_dir: str | os.PathLike | list | None,
    out_path: str | os.PathLike,
    patches_per_mesh: int = 200,
    n_gt: int = 1024,
    n_in: int = 256,
    seed: int = 0,
    input_key: str | None = None,
    gt_key: str | None = None,
    n_dense: int | None = None,
    input_sampling: Literal["gaussian", "poisson"] = "gaussian",
    procedural: int = 0,
    exclude_near: str | os.PathLike | None = None,
) -> Path:
    """Build a PU-GAN-style HDF5 (poisson_{n_in}, poisson_{n_gt}, mesh_index) from mesh folder(s) and
    `procedural` generated shapes; shape names, geometry hashes and fingerprints are kept for leak checks.
    exclude_near: a folder of (test) clouds; a shape whose fingerprint lies within the leak check's match distance
    of one of them is left out (named in the file's `excluded` attribute), so the data cannot trip `pc eval`.

    Per mesh: n_dense (default 8 n_gt) Poisson-disk points, FPS seeds, kNN patches on the unit sphere, sparse inputs."""
    if input_sampling not in ("gaussian", "poisson"):
        raise PointCloudError(f"make_pugan_h5: input_sampling must be 'gaussian' or 'poisson', got {input_sampling!r}")
    meshes = training_shapes(mesh_dir, procedural, seed)
    n_dense = n_dense or 8 * n_gt
    if not 0 < n_in <= n_gt <= n_dense:
        raise PointCloudError(f"make_pugan_h5: need 0 < n_in ({n_in}) <= n_gt ({n_gt}) <= n_dense ({n_dense})")
    avoid = _exclusion_clouds(exclude_near)
    inputs, gts, owner, hashes, prints, kept, excluded = [], [], [], [], [], [], []
    with progress_bar(transient=True) as bar:
        task = bar.add_task("PU-GAN patches", total=len(meshes))
        for k, (name, load) in enumerate(meshes):
            bar.advance(task)
            v, f = load()
            fp = fingerprint(v, f, seed)
            near = [row["test"] for row in find_overlap(_one(name, fp), [], avoid)]
            if near:
                excluded.append(f"{name}~{near[0]}")
                continue
            hashes.append(geometry_hash(v, f))
            prints.append(fp)
            inp, gt = _mesh_patches(v, f, patches_per_mesh, n_gt, n_in, n_dense, seed * 100003 + k, input_sampling)
            inputs.append(inp)
            gts.append(gt)
            owner.append(np.full(len(gt), len(kept), dtype=np.int32))
            kept.append(name)
    if not kept:
        raise PointCloudError("make-data: every shape was excluded as near a test shape")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    with h5py.File(tmp, "w") as fh:
        fh.create_dataset(input_key or f"poisson_{n_in}", data=np.concatenate(inputs).astype(np.float32))
        fh.create_dataset(gt_key or f"poisson_{n_gt}", data=np.concatenate(gts).astype(np.float32))
        fh.create_dataset("mesh_index", data=np.concatenate(owner))
        fh.create_dataset("fingerprints", data=np.stack(prints))
        fh.attrs["meshes"] = kept
        fh.attrs["excluded"] = excluded
        fh.attrs["mesh_hashes"] = hashes
        fh.attrs["procedural"] = procedural
        fh.attrs["seed"], fh.attrs["n_dense"], fh.attrs["input_sampling"] = seed, n_dense, input_sampling
    os.replace(tmp, out_path)
    return out_path


def _exclusion_clouds(folder: str | os.PathLike | None) -> dict[str, np.ndarray]:
    """Clouds of a folder by stem (empty without a folder); a missing or empty folder is an error."""
    if folder is None:
        return {}
    files = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in CLOUD_EXTS)
    if not files:
        raise PointCloudError(f"{folder}: no clouds to keep the training data away from")
    return {p.stem: read_cloud(p) for p in files}


def _one(name: str, fp: np.ndarray) -> dict:
    """A one-shape leak record (find_overlap's input) for a shape being generated."""
    return {"names": [name], "hashes": [], "fingerprints": fp[None]}


def make_test_pairs(
    mesh_dir: str | os.PathLike, out_dir: str | os.PathLike, n_in: int = 2048, n_gt: int = 8192, seed: int = 0
) -> list[Path]:
    """Per mesh, independent Poisson-disk samples input_{n_in}/<name>.xyz and gt_{n_gt}/<name>.xyz; returns paths."""
    out_dir = Path(out_dir)
    written = []
    for k, mesh in enumerate(list_meshes(mesh_dir)):
        v, f = read_mesh(mesh)
        for sub, n, s in ((f"input_{n_in}", n_in, 2 * k), (f"gt_{n_gt}", n_gt, 2 * k + 1)):
            path = out_dir / sub / f"{mesh.stem}.xyz"
            write_cloud(path, poisson_disk_sample(v, f, n, seed * 100003 + s))
            written.append(path)
    return written


def random_rotations(b: int, generator: torch.Generator | None = None, dtype=torch.float32, device=None) -> Tensor:
    """b rotation matrices [b,3,3] uniform on SO(3), from normalised Gaussian quaternions."""
    gdev = generator.device if generator is not None else "cpu"
    q = torch.randn(b, 4, generator=generator, device=gdev, dtype=torch.float64)
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - z * w),
            2 * (x * z + y * w),
            2 * (x * y + z * w),
            1 - 2 * (x * x + z * z),
            2 * (y * z - x * w),
            2 * (x * z - y * w),
            2 * (y * z + x * w),
            1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(b, 3, 3)
    return rot.to(device=device, dtype=dtype)


def augment(
    inp: Tensor,
    gt: Tensor,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.8, 1.2),
    sigma: float = 0.01,
    clip: float = 0.03,
) -> tuple[Tensor, Tensor]:
    """Same random rotation and scale for input [B,N,3] and gt [B,M,3]; Gaussian jitter (clipped) on the input only."""
    if inp.ndim != 3 or gt.ndim != 3 or inp.shape[-1] != 3 or gt.shape[-1] != 3 or len(inp) != len(gt):
        raise PointCloudError(
            f"augment: expected input [B,N,3] and gt [B,M,3], got {list(inp.shape)} and {list(gt.shape)}"
        )
    b, dev, dt = inp.shape[0], inp.device, inp.dtype
    gdev = generator.device if generator is not None else "cpu"
    rot = random_rotations(b, generator, dt, dev)
    s = (torch.rand(b, 1, 1, generator=generator, device=gdev) * (scale[1] - scale[0]) + scale[0]).to(dev, dt)
    noise = (torch.randn(inp.shape, generator=generator, device=gdev) * sigma).clamp(-clip, clip).to(dev, dt)
    return (inp @ rot.transpose(1, 2)) * s + noise, (gt @ rot.transpose(1, 2)) * s
