"""Benchmark `affcli ablate`: a 24-run grid on a synthetic cache, sequential vs --jobs N vs --dask-local N.

Prints wall time per run and parallel efficiency T_seq / (N * T_par) (against `seq`, torch threads = cores, or
`seq1`, one thread, whichever comes first in --modes), that over what N CPU spinners reach on the machine now (other
users' load), and the CPU-seconds ratio (overhead work, independent of load); `--device cuda --scale` sizes the
cache like Aff-Wild2 EXPR (about 300 videos x 3000 frames, 512-d visual + 768-d audio) for runs/hour on a GPU.
Each mode runs in a fresh process, as `affcli ablate` does (a pool forks its workers only from a process that has
not started polars' thread pool), which also reports how its workers started and how long until one was ready.

    python bench/ablate.py --out results.json
    python bench/ablate.py --device cuda --scale --modes seq,jobs --jobs 4 --out gpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from rich.console import Console  # noqa: E402

from affcli.heads.ablate.execute import run_grid  # noqa: E402
from affcli.heads.ablate.run import cpu_count  # noqa: E402
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


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (pool workers are joined when a grid ends)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine_efficiency(workers: int) -> float:
    """Parallel efficiency the machine itself offers now: `workers` CPU-bound spinners vs one (1.0 on idle cores;
    lower when other users load a shared machine). The grid's efficiency cannot exceed it."""
    return _spinners(1) / _spinners(workers)


def _grid(args: argparse.Namespace):
    return grid_from_dict({"base": {"task": "expr", "features": ["clip:synth", "wav2vec2:synth"],
                                    "epochs": args.epochs, "device": args.device}, "axes": AXES}, source="bench")


def one_mode(args: argparse.Namespace) -> dict:
    """In a fresh process: validate the grid (as `affcli ablate` does), run it in one mode; its figures."""
    modes = {"seq": {}, "seq1": {"threads": 1}, "jobs": {"jobs": args.jobs}, "dask": {"dask_local": args.jobs}}
    grid = _grid(args)
    runs = build_runs(grid, args.cache, args.labels)
    shutil.rmtree(args.one_out, ignore_errors=True)
    t, c = time.perf_counter(), _cpu_s()
    res = run_grid(runs, args.one_out, console=Console(quiet=not args.verbose), grid_meta=grid_meta(grid),
                   progress=args.verbose, **modes[args.one])
    wall, cpu = time.perf_counter() - t, _cpu_s() - c
    return {"wall_s": wall, "cpu_s": cpu, "ok": res.count("ok"), "failed": res.count("failed"), "runs": len(runs),
            "data_loads": res.data_loads, "mean_run_s": sum(o.seconds for o in res.ran) / max(1, len(res.ran)),
            "start_method": res.start_method, "worker_start_s": res.worker_start_s}


def bench(args: argparse.Namespace) -> dict:
    """Run the grid once per mode, each in a fresh process; return timings and efficiencies."""
    work = Path(args.work or tempfile.mkdtemp(prefix="affcli-bench-ablate-"))
    videos, frames, dims = (300, 3000, (512, 768)) if args.scale else (args.videos, args.frames, (32, 24))
    t0 = time.perf_counter()
    cache, labels = make_synthetic(work / "data", n_videos=videos, n_frames=frames, dims=dims, seed=0)
    t_make = time.perf_counter() - t0
    runs = build_runs(_grid(args), cache, labels)
    out: dict = {"runs": len(runs), "videos": videos, "frames_per_video": frames, "dims": dims,
                 "epochs": args.epochs, "device": args.device, "jobs": args.jobs, "cores": cpu_count(),
                 "host": platform.node(), "python": platform.python_version(), "make_cache_s": t_make, "modes": {}}
    ceiling_before = machine_efficiency(args.jobs)
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--one", mode, "--one-out", str(work / f"out-{mode}"), "--cache", str(cache),
               "--labels", str(labels), "--jobs", str(args.jobs), "--epochs", str(args.epochs), "--device", args.device]
        r = json.loads(subprocess.run(cmd + (["--verbose"] if args.verbose else []), check=True, stdout=subprocess.PIPE,
                                      text=True).stdout.strip().splitlines()[-1])
        wall, workers = r["wall_s"], 1 if mode.startswith("seq") else args.jobs
        out["modes"][mode] = {"workers": workers, "per_run_s": wall / len(runs), "runs_per_hour": 3600 * len(runs) / wall,
                              **r}
        start = f"  workers {r['start_method']}ed, first ready after {r['worker_start_s']:.2f} s" \
            if r["worker_start_s"] is not None else ""
        print(f"{mode:5s} workers={workers} wall={wall:7.1f} s  per run={wall / len(runs):6.2f} s  "
              f"runs/h={3600 * len(runs) / wall:8.0f}  ok={r['ok']} failed={r['failed']}  "
              f"data loads={r['data_loads']}{start}", flush=True)
    out["machine_efficiency"] = (ceiling_before + machine_efficiency(args.jobs)) / 2
    out["load_avg"] = os.getloadavg()
    print(f"machine: {args.jobs} spinners reach efficiency {out['machine_efficiency']:.2f} (mean of before/after) "
          f"(load average {out['load_avg'][0]:.1f})", flush=True)
    base = next((m for m in ("seq", "seq1") if m in out["modes"]), None)
    if base:
        t_seq = out["modes"][base]["wall_s"]
        for mode, r in out["modes"].items():
            if not mode.startswith("seq"):
                r["efficiency"] = t_seq / (r["workers"] * r["wall_s"])
                r["efficiency_vs_machine"] = r["efficiency"] / out["machine_efficiency"]
                r["cpu_ratio"] = out["modes"][base]["cpu_s"] / r["cpu_s"]
                print(f"{mode:5s} parallel efficiency T_seq / ({r['workers']} x T_par) = {r['efficiency']:.2f} "
                      f"({r['efficiency_vs_machine']:.2f} of what the machine offers now); CPU seconds {base} / {mode} = "
                      f"{r['cpu_ratio']:.2f} (1.0: no extra work such as worker start-up)", flush=True)
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
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--one-out", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--labels", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_mode(args)))
        return
    res = bench(args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
