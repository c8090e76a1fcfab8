"""A KITTI-style LiDAR scan upsampled x4 in chunks under a memory budget: time, peak RSS and a render.

No KITTI scan ships with the shared data and no network is reachable, so `synth` ray-casts one: a 64-beam
rotating sensor (elevation +2 to -24.8 deg like an HDL-64E, 0.18 deg azimuth steps, 1.73 m above the road, 80 m
range, 2 cm range noise) in a street scene (road, kerbs, building facades with gaps, parked cars, poles, tree
crowns), written as KITTI .bin (x y z reflectance, float32). `run` times `affcli pc upsample` on it in a child
process per budget and reads the child's peak RSS; the renders (whole scan from the CLI's --render, and a
close-up of a car and a facade, z up) go beside the output.

    python bench/pc_lidar.py synth --out /tmp/lidar/scan.bin
    python bench/pc_lidar.py run --scan /tmp/lidar/scan.bin --out /tmp/lidar --budgets 1024 4096 --threads 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RANGE = 80.0
HEIGHT = 1.73


def _boxes(rng: np.random.Generator) -> np.ndarray:
    """Axis-aligned boxes [K,6] (lo xyz, hi xyz) in the sensor frame: facades, kerbs and parked cars."""
    z0 = -HEIGHT
    boxes = []
    for side in (-1, 1):
        x = -60.0
        while x < 60:
            length = rng.uniform(8, 20)
            depth, height = rng.uniform(6, 10), rng.uniform(6, 15)
            y = side * rng.uniform(11, 13)
            boxes.append([x, min(y, y + side * depth), z0, x + length, max(y, y + side * depth), z0 + height])
            x += length + rng.uniform(1, 6)
        boxes.append([-60, side * 7.15 - 0.15, z0, 60, side * 7.15 + 0.15, z0 + 0.15])  # kerb
    for _ in range(14):
        side = rng.choice([-1, 1])
        cx, cy = rng.uniform(-40, 40), side * rng.uniform(4.5, 6.0)
        if abs(cx) < 5 and abs(cy) < 3:
            continue
        boxes.append([cx - 2.2, cy - 0.9, z0 + 0.25, cx + 2.2, cy + 0.9, z0 + 1.5])
    return np.asarray(boxes, np.float64)


def _hit_boxes(d: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Distance along unit rays d [R,3] from the origin to the nearest box (inf: none), slab test."""
    best = np.full(len(d), np.inf)
    inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
    for b in boxes:
        t1, t2 = b[:3] * inv, b[3:] * inv
        near, far = np.minimum(t1, t2).max(1), np.maximum(t1, t2).min(1)
        ok = (far >= near) & (near > 0)
        best = np.where(ok & (near < best), near, best)
    return best


def _hit_cylinders(d: np.ndarray, cyl: np.ndarray) -> np.ndarray:
    """Distance to the nearest vertical cylinder [K,5] (x, y, radius, z lo, z hi)."""
    best = np.full(len(d), np.inf)
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    for x, y, r, lo, hi in cyl:
        b = -2 * (d[:, 0] * x + d[:, 1] * y)
        c = x * x + y * y - r * r
        disc = b * b - 4 * a * c
        t = (-b - np.sqrt(np.clip(disc, 0, None))) / (2 * np.maximum(a, 1e-12))
        z = t * d[:, 2]
        ok = (disc >= 0) & (t > 0) & (z >= lo) & (z <= hi)
        best = np.where(ok & (t < best), t, best)
    return best


def _hit_spheres(d: np.ndarray, sph: np.ndarray) -> np.ndarray:
    """Distance to the nearest sphere [K,4] (centre xyz, radius)."""
    best = np.full(len(d), np.inf)
    for *c, r in sph:
        c = np.asarray(c)
        b = d @ c
        disc = b * b - (c @ c - r * r)
        t = b - np.sqrt(np.clip(disc, 0, None))
        ok = (disc >= 0) & (t > 0)
        best = np.where(ok & (t < best), t, best)
    return best


def synth_scan(seed: int = 0) -> np.ndarray:
    """[N,4] float32 x y z reflectance of one synthetic 64-beam sweep (about 120k returns)."""
    rng = np.random.default_rng(seed)
    elev = np.deg2rad(np.linspace(2.0, -24.8, 64))
    azim = np.deg2rad(np.arange(0, 360, 0.18))
    e, a = np.meshgrid(elev, azim, indexing="ij")
    d = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    poles = [[x, s * 7.6, 0.12, -HEIGHT, 6.0] for x in np.arange(-50, 51, 17.0) for s in (-1, 1)]
    trunks = [[x + 8, s * 8.5, 0.25, -HEIGHT, 2.5] for x in np.arange(-45, 46, 22.0) for s in (-1, 1)]
    crowns = [[x + 8, s * 8.5, 4.2, 2.2] for x in np.arange(-45, 46, 22.0) for s in (-1, 1)]
    ground = np.where(d[:, 2] < -1e-6, -HEIGHT / np.minimum(d[:, 2], -1e-6), np.inf)
    hits = np.stack([ground, _hit_boxes(d, _boxes(rng)), _hit_cylinders(d, np.asarray(poles + trunks)),
                     _hit_spheres(d, np.asarray(crowns))], 1)
    t, kind = hits.min(1), hits.argmin(1)
    keep = t < RANGE
    t = t[keep] + rng.normal(0, 0.02, keep.sum())
    pts = d[keep] * t[:, None]
    refl = np.array([0.25, 0.45, 0.6, 0.35])[kind[keep]] + rng.normal(0, 0.05, keep.sum())
    return np.concatenate([pts, np.clip(refl, 0, 1)[:, None]], 1).astype(np.float32)


def close_up(before: np.ndarray, after: np.ndarray, path: Path) -> None:
    """Render of a 12 m x 8 m window beside the sensor (a parked car, the kerb, a facade), z up."""
    from affcli.pointcloud.render import render_before_after

    def crop(p):
        m = (p[:, 0] > -2) & (p[:, 0] < 10) & (p[:, 1] > 2) & (p[:, 1] < 14)
        return p[m][:, [0, 2, 1]]  # the renderer draws its second column upwards

    render_before_after(crop(before), crop(after), path, "synthetic 64-beam scan, x4, close-up (z up)")


def run(a: argparse.Namespace) -> None:
    """`affcli pc upsample` per budget in a child process: wall time, the child's peak RSS, the counts."""
    from affcli.pointcloud.io import read_cloud

    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    n = len(read_cloud(a.scan))
    for budget in a.budgets:
        out = a.out / f"{a.scan.stem}_x4_{budget}.ply"
        code = ("import resource, sys\nfrom affcli.cli import app\ntry:\n    app(prog_name='affcli')\nfinally:\n"
                "    print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
        cmd = [sys.executable, "-c", code, "pc", "upsample", str(a.scan), "--ratio", "4", "--max-memory",
               str(budget), "--out", str(out), "--device", "cpu", *(["--threads", str(a.threads)] if a.threads else []),
               *(["--render"] if budget == a.budgets[0] else [])]
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if res.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd[3:])}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        peak = next(int(l.split()[1]) for l in res.stderr.splitlines() if l.startswith("PEAK_KB")) / 1024
        line = res.stdout.strip().splitlines()[-1]
        rows.append({"budget_mib": budget, "input_points": n, "output_points": len(read_cloud(out)), "wall_s": wall,
                     "peak_rss_mib": peak, "cli": line})
        print(json.dumps(rows[-1]), flush=True)
    close_up(read_cloud(a.scan), read_cloud(a.out / f"{a.scan.stem}_x4_{a.budgets[0]}.ply"),
             a.out / f"{a.scan.stem}_x4_closeup.png")
    (a.out / "lidar.json").write_text(json.dumps({"scan": str(a.scan), "threads": a.threads, "rows": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("synth")
    sp.add_argument("--out", type=Path, required=True)
    sp.add_argument("--seed", type=int, default=0)
    rp = sub.add_parser("run")
    rp.add_argument("--scan", type=Path, required=True)
    rp.add_argument("--out", type=Path, required=True)
    rp.add_argument("--budgets", type=float, nargs="+", default=[1024.0])
    rp.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.cmd == "synth":
        scan = synth_scan(a.seed)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        scan.tofile(a.out)
        print(f"{a.out}: {len(scan)} points")
    else:
        run(a)


if __name__ == "__main__":
    main()
