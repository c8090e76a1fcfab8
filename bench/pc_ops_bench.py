"""Timings of the point-cloud geometry path (FPS, kNN, Chamfer, P2F, Poisson-disk, evaluate) on CPU or CUDA.

Usage: python bench/pc_ops_bench.py [--device cpu|cuda] [--threads N]; prints one JSON line per figure."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from affcli.pointcloud.metrics import chamfer, evaluate_clouds, point_to_mesh_distance  # noqa: E402
from affcli.pointcloud.ops import farthest_point_sample, knn  # noqa: E402
from affcli.pointcloud.sampling import poisson_disk_sample, sample_surface_uniform  # noqa: E402

SHARED = Path(os.environ.get("AFFCLI_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))


def uv_sphere(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed UV sphere with 2 n_lon (n_lat - 1) triangles."""
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    v = np.concatenate(
        [
            [[0, 0, 1]],
            np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3),
            [[0, 0, -1]],
        ]
    )
    ring = lambda i, j: 1 + i * n_lon + j % n_lon  # noqa: E731
    j = np.arange(n_lon)
    faces = [np.stack([np.zeros(n_lon, int), ring(0, j + 1), ring(0, j)], 1)]
    for i in range(n_lat - 2):
        faces += [
            np.stack([ring(i, j), ring(i, j + 1), ring(i + 1, j)], 1),
            np.stack([ring(i, j + 1), ring(i + 1, j + 1), ring(i + 1, j)], 1),
        ]
    last = len(v) - 1
    faces.append(np.stack([np.full(n_lon, last), ring(n_lat - 2, j), ring(n_lat - 2, j + 1)], 1))
    return v, np.concatenate(faces)


def timed(fn, device: str, reps: int = 3) -> float:
    """Median wall seconds of fn() over reps runs after one warm-up."""
    fn()
    out = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return float(np.median(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = a.device
    v, f = uv_sphere(82, 80)
    x = torch.from_numpy(sample_surface_uniform(v, f, 8192, 0)).float()[None].to(dev)
    y = torch.from_numpy(sample_surface_uniform(v, f, 8192, 1)).float()[None].to(dev)
    vt, ft = torch.from_numpy(v).float().to(dev), torch.from_numpy(f).to(dev)
    info = {"device": torch.cuda.get_device_name() if dev == "cuda" else f"cpu x{torch.get_num_threads()}"}
    figs = {
        "fps_8192_to_2048": lambda: farthest_point_sample(x, 2048),
        "knn16_8192x8192": lambda: knn(x, y, 16),
        "chamfer_8192x8192": lambda: chamfer(x, y),
        f"p2f_8192_vs_{len(f)}_faces": lambda: point_to_mesh_distance(x[0] * 1.01, vt, ft),
        "fps_b64_1024_to_256": lambda: farthest_point_sample(x[:, :1024].expand(64, -1, -1).contiguous(), 256),
        "chamfer_b64_1024x1024": lambda: chamfer(x[:, :1024].expand(64, -1, -1), y[:, :1024].expand(64, -1, -1)),
    }
    for name, fn in figs.items():
        print(json.dumps({"figure": name, "seconds": round(timed(fn, dev), 4), **info}), flush=True)
    mesh = SHARED / "data" / "pointcloud" / "pugan_test" / "meshes" / "fandisk.off"
    if mesh.is_file():
        from affcli.pointcloud.io import read_cloud, read_mesh

        mv, mf = read_mesh(mesh)
        t = time.perf_counter()
        pd = poisson_disk_sample(mv, mf, 8192, 0)
        print(
            json.dumps(
                {"figure": "poisson_disk_8192_fandisk", "seconds": round(time.perf_counter() - t, 4), "cpu": True}
            )
        )
        pc = SHARED / "data" / "pointcloud"
        pred, gt = (
            read_cloud(pc / "pugan_x4_outputs" / "fandisk.xyz"),
            read_cloud(pc / "pugan_test" / "gt_8192" / "fandisk.xyz"),
        )
        sec = timed(lambda: evaluate_clouds(pred, gt, (mv, mf), device=dev), dev, 1)
        res = evaluate_clouds(pred, gt, (mv, mf), device=dev)
        print(
            json.dumps(
                {
                    "figure": "evaluate_fandisk_pugan_x4",
                    "seconds": round(sec, 4),
                    **info,
                    **{k: (round(val * 1e3, 4) if isinstance(val, float) else val) for k, val in res.items()},
                }
            )
        )
        del pd


if __name__ == "__main__":
    main()
