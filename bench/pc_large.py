"""Large-cloud upsampling (issue 20): 2M points x4 under --max-memory through the CLI, where the time goes, and what
the assign merge's seed density costs in quality.

`make` samples N points uniformly on a shared mesh (default: the Stanford bunny of train_meshes, so no evaluation
shape is touched) and writes .npy. `run` times `affcli pc upsample` on it in a child process per budget: wall time,
the child's own peak RSS (os.wait4), the output count (must be exactly round(ratio N)), the progress lines its
non-tty stderr printed (with the second each arrived), and the mean point-to-mesh distance of 20k output points
(and of 20k input points, for scale).
`profile` runs the same upsampling in-process with timers on each stage (halo, seed FPS, patch kNN, cover,
central slots, network, merge). `seeds` scores the assign merge at several seed densities on the PU-GAN test set
(27 clouds of 2048 points, x4, against gt_8192 and the meshes) and on 20k-point samples of test meshes.

    python bench/pc_large.py make --points 2000000 --out /tmp/pc_large/bunny_2m.npy
    python bench/pc_large.py run --cloud /tmp/pc_large/bunny_2m.npy --budgets 2048 1024 \
        --json bench/results/pc_large_2m.json
    python bench/pc_large.py profile --cloud /tmp/pc_large/bunny_200k.npy
    python bench/pc_large.py seeds --factors 3 1.5 --json bench/results/pc_assign_seeds.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pointcloud"
MESH = DATA / "train_meshes" / "stanford-bunny.obj"
P2F_SAMPLE = 20_000  # points scored against the mesh (brute-force P2F: seconds, not minutes)


def make(a: argparse.Namespace) -> None:
    """N points uniform on the mesh surface (float32 .npy), seeded."""
    from affcli.pointcloud.io import read_mesh, write_cloud
    from affcli.pointcloud.sampling import sample_surface_uniform

    v, f = read_mesh(a.mesh)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_cloud(a.out, sample_surface_uniform(v, f, a.points, seed=a.seed).astype(np.float32))
    print(f"{a.points} points on {a.mesh.name} -> {a.out}")


def _p2f(cloud: np.ndarray, mesh: Path, n: int = P2F_SAMPLE) -> float:
    """Mean distance of n random points of `cloud` to the mesh, in units of the mesh's bounding radius x 1e3."""
    import torch

    from affcli.pointcloud.io import read_mesh
    from affcli.pointcloud.metrics import point_to_mesh_distance

    v, f = read_mesh(mesh)
    centre = v.mean(0)
    radius = float(np.linalg.norm(v - centre, axis=1).max())
    pick = np.random.default_rng(0).choice(len(cloud), min(n, len(cloud)), replace=False)
    d = point_to_mesh_distance(torch.from_numpy((cloud[pick] - centre) / radius).float(),
                               torch.from_numpy((v - centre) / radius).float(), torch.from_numpy(f))
    return float(d.mean()) * 1e3


def upsample_child(cloud: Path, out: Path, budget: float, ratio: float, threads: int | None,
                   timeout: float) -> dict:
    """One `affcli pc upsample` child: wall time, its own peak RSS, exit status, stdout and timed stderr lines."""
    cmd = [sys.executable, "-m", "affcli", "pc", "upsample", str(cloud), "--ratio", f"{ratio:g}", "--max-memory",
           f"{budget:g}", "--out", str(out), "--device", "cpu", *(["--threads", str(threads)] if threads else [])]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def pump() -> None:
        for line in proc.stderr:
            lines.append((round(time.perf_counter() - t0, 1), line.rstrip("\n")))
            print(f"  [{lines[-1][0]:7.1f}s] {lines[-1][1]}", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(5)
    return {"command": "affcli " + " ".join(cmd[3:]), "exit": proc.returncode, "timed_out": wall >= timeout,
            "wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "stdout": stdout.strip(),
            "stderr": lines}


def run(a: argparse.Namespace) -> None:
    """Each budget in its own child process; exits 1 when any run fails, times out or returns a wrong count."""
    from affcli.pointcloud.io import read_cloud

    n = len(read_cloud(a.cloud))
    a.out.mkdir(parents=True, exist_ok=True)
    rows, ok = [], True
    for budget in a.budgets:
        out = a.out / f"{a.cloud.stem}_x{a.ratio:g}_{budget:g}.npy"
        out.unlink(missing_ok=True)
        print(f"x{a.ratio:g} of {n} points, --max-memory {budget:g}", flush=True)
        row = {"budget_mib": budget, "input_points": n, **upsample_child(a.cloud, out, budget, a.ratio, a.threads,
                                                                          a.timeout)}
        if row["exit"] == 0:
            up = read_cloud(out)
            row["output_points"] = len(up)
            row["exact_count"] = len(up) == round(a.ratio * n)
            row["finite"] = bool(np.isfinite(up).all())
            if a.mesh:
                row["p2f_mean_1e3"] = round(_p2f(up, a.mesh), 3)
                row["p2f_input_1e3"] = round(_p2f(read_cloud(a.cloud), a.mesh), 3)
            out.unlink()
        row["progress_lines"] = sum(line.startswith("progress:") for _, line in row["stderr"])
        ok &= row["exit"] == 0 and row.get("exact_count", False)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "stderr"}), flush=True)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
               "note": a.machine}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"cloud": str(a.cloud), "mesh": str(a.mesh) if a.mesh else None,
                                      "ratio": a.ratio, "threads": a.threads, "machine": machine, "rows": rows},
                                     indent=1))
    sys.exit(0 if ok else 1)


def profile(a: argparse.Namespace) -> None:
    """upsample_large in-process with wall-clock timers around each stage (nested stages counted in both)."""
    import torch

    import affcli.pointcloud.chunked as C
    import affcli.pointcloud.upsample as U
    from affcli.common.threads import configure_threads
    from affcli.pointcloud.io import read_cloud

    spent: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)

    def timed(mod, name: str, label: str) -> None:
        fn = getattr(mod, name)

        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - t
                calls[label] += 1

        setattr(mod, name, wrapper)

    for mod, name, label in [(C, "_halo", "halo"), (C, "kd_chunks", "kd chunks"),
                             (U, "farthest_point_sample", "seed FPS"), (U, "_patches", "patch kNN"),
                             (U, "_cover", "cover (incl. its kNN)"), (U, "_central", "central slots"),
                             (U, "_infer", "network"), (U, "blocked_fps_merge", "merge / thinning"),
                             (C, "blocked_fps_merge", "merge / thinning (chunks)"), (U, "unit_cloud", "unit cloud")]:
        timed(mod, name, label)
    threads = configure_threads(a.threads)
    model = U.load_upsampler(None, "cpu")
    xyz = read_cloud(a.cloud)
    patches = count_patches(U, "patches")
    t = time.perf_counter()
    out = C.upsample_large(model, xyz, a.ratio, a.max_memory, a.batch or U.default_batch("cpu"),
                           on_chunk=lambda p, d, tot: print(f"  chunk {d}/{tot} {time.perf_counter() - t:.1f}s",
                                                            flush=True))
    total = time.perf_counter() - t
    res = {"cloud": str(a.cloud), "points": len(xyz), "output_points": len(out), "max_memory": a.max_memory,
           "threads": threads, "batch": a.batch or U.default_batch("cpu"), "total_s": round(total, 1),
           "patches": patches["patches"], "ms_per_patch": round(spent["network"] / max(1, patches["patches"]) * 1e3, 1),
           "stages_s": {k: round(v, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])},
           "calls": dict(calls), "torch": torch.__version__}
    print(json.dumps(res, indent=1))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1))


def count_patches(upsample_module, key: str) -> collections.Counter:
    """A counter that `upsample_module._infer` (patched here for the rest of the process) adds each batch's patch
    count to, under `key`."""
    patches: collections.Counter = collections.Counter()
    infer = upsample_module._infer

    def count(model_, pts, batch):
        patches[key] += len(pts)
        return infer(model_, pts, batch)

    upsample_module._infer = count
    return patches


def seeds(a: argparse.Namespace) -> None:
    """The assign merge at each seed density: PU-GAN test set (x4 of 2048 inputs) and 20k-point mesh samples,
    mean CD / HD / P2F (x1e-3), patches through the network and seconds."""
    import torch

    import affcli.pointcloud.upsample as U
    from affcli.pointcloud.io import read_cloud, read_mesh
    from affcli.pointcloud.metrics import evaluate_clouds
    from affcli.pointcloud.sampling import sample_surface_uniform

    torch.set_num_threads(a.threads or 1)
    model = U.load_upsampler(None, "cpu")
    test = DATA / "pugan_test"
    inputs = sorted((test / "input_2048").glob("*.xyz"))
    large = [(m, sample_surface_uniform(*read_mesh(test / "meshes" / f"{m}.off"), a.large_points, seed=1))
             for m in a.large_meshes]
    patches = count_patches(U, "n")
    rows = []
    for factor in a.factors:
        U.ASSIGN_SEED_FACTOR = factor
        for label, clouds in (("pugan27", [(p.stem, read_cloud(p)) for p in inputs]), ("large", large)):
            scores, t, patches["n"] = [], time.perf_counter(), 0
            for stem, x in clouds:
                up = U.upsample_pass(model, torch.from_numpy(np.asarray(x, np.float32)), U.default_batch("cpu"),
                                     "assign").numpy()
                if label == "pugan27":
                    gt = read_cloud(test / "gt_8192" / f"{stem}.xyz")
                    mesh_path = test / "meshes" / f"{stem}.off"
                    scores.append(evaluate_clouds(up, gt, read_mesh(mesh_path) if mesh_path.is_file() else None,
                                                  device="cpu"))
                else:
                    mesh = read_mesh(test / "meshes" / f"{stem}.off")
                    gt = sample_surface_uniform(*mesh, len(up), seed=2)
                    scores.append(evaluate_clouds(up, gt, mesh, device="cpu"))
            row = {"factor": factor, "set": label, "clouds": len(clouds), "patches": patches["n"],
                   "seconds": round(time.perf_counter() - t, 1)}
            for k in ("cd", "hd", "p2f_mean"):
                vals = [s[k] for s in scores if s[k] is not None]
                row[k] = round(float(np.mean(vals)) * 1e3, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"large_meshes": a.large_meshes, "large_points": a.large_points, "rows": rows},
                                     indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="sample a large cloud on a mesh")
    m.add_argument("--points", type=int, default=2_000_000)
    m.add_argument("--mesh", type=Path, default=MESH)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="time `affcli pc upsample` per budget in a child process")
    r.add_argument("--cloud", type=Path, required=True)
    r.add_argument("--mesh", type=Path, default=MESH, help="for the output's point-to-mesh distance ('' to skip)")
    r.add_argument("--budgets", type=float, nargs="+", default=[2048.0, 1024.0])
    r.add_argument("--ratio", type=float, default=4.0)
    r.add_argument("--threads", type=int, default=None, help="default: the CLI's own choice")
    r.add_argument("--timeout", type=float, default=1800.0, help="seconds before a child is killed")
    r.add_argument("--out", type=Path, default=Path("/tmp/pc_large"))
    r.add_argument("--machine", default="", help="free text stored with the results")
    r.add_argument("--json", type=Path)
    p = sub.add_parser("profile", help="in-process stage timers")
    p.add_argument("--cloud", type=Path, required=True)
    p.add_argument("--max-memory", type=float, default=2048.0)
    p.add_argument("--ratio", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path)
    s = sub.add_parser("seeds", help="quality and cost of the assign merge per seed density")
    s.add_argument("--factors", type=float, nargs="+", default=[3.0, 2.0, 1.5])
    s.add_argument("--large-meshes", nargs="+", default=["kitten", "chair", "camel", "fandisk"])
    s.add_argument("--large-points", type=int, default=20_000)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--json", type=Path)
    a = ap.parse_args()
    if getattr(a, "mesh", None) == Path(""):
        a.mesh = None
    {"make": make, "run": run, "profile": profile, "seeds": seeds}[a.cmd](a)


if __name__ == "__main__":
    main()
