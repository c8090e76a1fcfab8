"""`affcli pc metrics` on two large clouds: wall time and peak memory of the whole command (a child process).

    python bench/pc_metrics.py --points 2000000 [--format npy|ply|xyz] [--device cpu]

Prints one line: points, seconds, peak RSS (MiB) and the metrics. Clouds are noisy unit-sphere samples.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def sphere(n: int, noise: float, seed: int) -> np.ndarray:
    """n points near the unit sphere (Gaussian noise of `noise` along each axis)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (x + noise * rng.normal(size=(n, 3))).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=2_000_000)
    ap.add_argument("--format", default="npy", choices=("npy", "ply", "xyz"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from affcli.pointcloud.io import write_cloud

    with tempfile.TemporaryDirectory() as tmp:
        pred, gt = Path(tmp) / f"pred.{args.format}", Path(tmp) / f"gt.{args.format}"
        if args.format == "npy":
            np.save(pred, sphere(args.points, 0.01, 0))
            np.save(gt, sphere(args.points, 0.0, 1))
        else:
            write_cloud(pred, sphere(args.points, 0.01, 0))
            write_cloud(gt, sphere(args.points, 0.0, 1))
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "affcli", "pc", "metrics", "--pred", str(pred), "--gt", str(gt),
                            "--device", args.device], capture_output=True, text=True)
        dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if r.returncode:
        sys.exit(f"pc metrics failed ({r.returncode}): {r.stderr.strip()}")
    print(f"pc metrics {args.points} vs {args.points} points ({args.format}, {args.device}): {dt:.1f} s, "
          f"peak RSS {peak:.0f} MiB; {r.stdout.strip()}")


if __name__ == "__main__":
    main()
