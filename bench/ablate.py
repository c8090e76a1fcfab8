"""Benchmark `affcli ablate`: a 24-run grid on a synthetic cache, sequential vs --jobs N vs --dask-local N.

Prints wall time per run and parallel efficiency T_seq / (N * T_par) (against `seq`, torch threads = cores, or
`seq1`, one thread, whichever comes first in --modes); `--device cuda --scale` sizes the
cache like Aff-Wild2 EXPR (about 300 videos x 3000 frames, 512-d visual + 768-d audio) for runs/hour on a GPU.

    python bench/ablate.py --out results.json
    python bench/ablate.py --device cuda --scale --modes seq,jobs --jobs 4 --out gpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


from rich.console import Console  # noqa: E402

from affcli.heads.ablate.execute import cpu_count, run_grid  # noqa: E402
from affcli.heads.ablate.grid import grid_from_dict  # noqa: E402
from affcli.synthetic.features import make_synthetic  # noqa: E402
from affcli.heads.ablate.validate import build_runs, grid_meta  # noqa: E402

AXES = {"fusion": ["none:visual", "none:audio", "concat", "xattn"], "temporal": ["mlp", "tcn", "gru"], "seeds": [0, 1]}


SPIN = "x = 0\nfor i in range(15_000_000):\n    x += i\n"


def _spinners(n: int) -> float:
    import subprocess
    import sys

    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-S", "-c", SPIN]) for _ in range(n)]
    for p in procs:
        p.wait()
    return time.perf_counter() - t


def machine_efficiency(workers: int) -> float:
    """Parallel efficiency the machine itself offers now: `workers` CPU-bound spinners vs one (1.0 on idle cores;
    lower when other users load a shared machine). The grid's efficiency cannot exceed it."""
    return _spinners(1) / _spinners(workers)


def bench(args: argparse.Namespace) -> dict:
    """Run the grid once per mode; return timings and efficiencies."""
    work = Path(args.work or tempfile.mkdtemp(prefix="affcli-bench-ablate-"))
    videos, frames, dims = (300, 3000, (512, 768)) if args.scale else (args.videos, args.frames, (32, 24))
    t0 = time.perf_counter()
    cache, labels = make_synthetic(work / "data", n_videos=videos, n_frames=frames, dims=dims, seed=0)
    t_make = time.perf_counter() - t0
    grid = grid_from_dict({"base": {"task": "expr", "features": ["clip:synth", "wav2vec2:synth"],
                                    "epochs": args.epochs, "device": args.device}, "axes": AXES}, source="bench")
    runs = build_runs(grid, cache, labels)
    console = Console(quiet=not args.verbose)
    modes = {"seq": {}, "seq1": {"threads": 1}, "jobs": {"jobs": args.jobs}, "dask": {"dask_local": args.jobs}}
    out: dict = {"runs": len(runs), "videos": videos, "frames_per_video": frames, "dims": dims,
                 "epochs": args.epochs, "device": args.device, "jobs": args.jobs, "cores": cpu_count(),
                 "host": platform.node(), "python": platform.python_version(), "make_cache_s": t_make, "modes": {}}
    for mode in args.modes.split(","):
        d = work / f"out-{mode}"
        shutil.rmtree(d, ignore_errors=True)
        t = time.perf_counter()
        res = run_grid(runs, d, console=console, grid_meta=grid_meta(grid), progress=args.verbose, **modes[mode])
        wall = time.perf_counter() - t
        workers = 1 if mode.startswith("seq") else args.jobs
        out["modes"][mode] = {"workers": workers, "wall_s": wall, "per_run_s": wall / len(runs),
                              "runs_per_hour": 3600 * len(runs) / wall, "ok": res.count("ok"),
                              "failed": res.count("failed"),
                              "mean_run_s": sum(o.seconds for o in res.ran) / max(1, len(res.ran))}
        print(f"{mode:5s} workers={workers} wall={wall:7.1f} s  per run={wall / len(runs):6.2f} s  "
              f"runs/h={3600 * len(runs) / wall:8.0f}  ok={res.count('ok')} failed={res.count('failed')}", flush=True)
    out["machine_efficiency"] = machine_efficiency(args.jobs)
    out["load_avg"] = os.getloadavg()
    print(f"machine: {args.jobs} spinners reach efficiency {out['machine_efficiency']:.2f} now "
          f"(load average {out['load_avg'][0]:.1f})", flush=True)
    base = next((m for m in ("seq", "seq1") if m in out["modes"]), None)
    if base:
        t_seq = out["modes"][base]["wall_s"]
        for mode, r in out["modes"].items():
            if not mode.startswith("seq"):
                r["efficiency"] = t_seq / (r["workers"] * r["wall_s"])
                r["efficiency_vs_machine"] = r["efficiency"] / out["machine_efficiency"]
                print(f"{mode:5s} parallel efficiency T_seq / ({r['workers']} x T_par) = {r['efficiency']:.2f} "
                      f"({r['efficiency_vs_machine']:.2f} of what the machine offers now)", flush=True)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=2, help="workers for the pool and the local Dask cluster")
    p.add_argument("--modes", default="seq,jobs,dask",
                   help="comma list of seq (torch threads = cores), seq1 (1 thread), jobs, dask; efficiency vs the first seq*")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--scale", action="store_true", help="Aff-Wild2 EXPR-sized cache (300 videos x 3000 frames)")
    p.add_argument("--work", help="keep the cache and run folders here")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--out", help="write results JSON here")
    args = p.parse_args()
    res = bench(args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
