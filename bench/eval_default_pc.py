"""Score the shipped default point-cloud model (or a run) against the no-learning references on the PU-GAN test set.

Methods: `model` (the shipped x4 PU-MFA, or --run), `prior` (the same network untrained: exactly its phong prior
through the same patch/merge pipeline), `midpoint` (kNN midpoints + global FPS, pc eval's baseline) and `input`
(the 2,048-point input itself), and `oracle` (an independent Poisson-disk sample of the test mesh itself, seed 5: no
method can beat the truth, so it shows what the ground truths' own sampling costs; shapes with meshes only, with the
other methods' means over the same shapes beside it). x4 against the 8,192-point ground truths of the 27 shapes; x16 against 32,768-point
Poisson-disk ground truths sampled here from the 21 test meshes that exist (seed 0, cached in OUT/gt_32768).
Any ratio: x4 against the 8,192-point ground truths; every other ratio (2.5, 5, 6, 16, ...) against
round(ratio x 2,048)-point Poisson-disk ground truths of the 21 meshes (seed 0, cached in OUT/gt_<n>). --noise adds
seeded Gaussian noise (sigma = level x the input's radius, `pointcloud.noise.add_noise`, the same for every method)
to the inputs, scored against the clean ground truths.
Both normalisation frames (own / gt), P2F on the meshes; per-shape rows and means in OUT/results_x<r>[_noise<l>].json
and .md; `--summary` prints one table of the means of every setting found in OUT.

    nice -n 19 python bench/eval_default_pc.py --out /tmp/pc_default_eval --ratios 4 16
    python bench/eval_default_pc.py --out /tmp/pc_default_eval --ratios 4 --noise 0.01 0.02
    python bench/eval_default_pc.py --out /tmp/pc_default_eval --ratios 2.5 5 6 --methods model prior midpoint input
    python bench/eval_default_pc.py --out /tmp/pc_default_eval --summary
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from affcli.common.threads import configure_threads
from affcli.pointcloud.baselines import midpoint_upsample
from affcli.pointcloud.evaluate import score_folder
from affcli.pointcloud.io import read_cloud, read_mesh, write_cloud
from affcli.pointcloud.leak import overlap_report
from affcli.pointcloud.models import model_from_spec, model_spec
from affcli.pointcloud.noise import add_noise
from affcli.pointcloud.sampling import poisson_disk_sample
from affcli.pointcloud.upsample import DEFAULT_MODEL, load_upsampler, upsample_cloud

PC = Path(__file__).resolve().parents[2] / "shared" / "data" / "pointcloud"
COLS = ("cd", "hd", "p2f_mean", "cd_gt", "hd_gt")


def gt_dense(meshes: Path, out: Path, n: int) -> Path:
    """Poisson-disk ground truths of n points for every test mesh (written once)."""
    out.mkdir(parents=True, exist_ok=True)
    for mesh in sorted(meshes.glob("*.off")):
        path = out / f"{mesh.stem}.xyz"
        if not path.is_file():
            write_cloud(path, poisson_disk_sample(*read_mesh(mesh), n, seed=0))
    return out


def oracle_fn(mesh_dir: Path, n_out: int):
    """fn(cloud, stem) -> an independent n_out-point Poisson-disk sample of that shape's test mesh (seed 5)."""
    return lambda x, stem: poisson_disk_sample(*read_mesh(mesh_dir / f"{stem}.off"), n_out, seed=5)


def meshed(files: list[Path], mesh_dir: Path) -> list[Path]:
    """The inputs whose test mesh exists (P2F and the oracle need one)."""
    return [f for f in files if (mesh_dir / f"{f.stem}.off").is_file()]


def subset_gt(gt_dir: Path, files: list[Path], out: Path) -> Path:
    """A folder of links to the ground truths of `files` only (score_folder wants a prediction for every gt)."""
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        dst = out / f"{f.stem}.xyz"
        if not dst.exists():
            dst.symlink_to((gt_dir / f"{f.stem}.xyz").resolve())
    return out


def subset_mean(rows: list[dict], names: set[str]) -> dict:
    """The mean row of `rows` over the shapes in `names` (the oracle's shapes)."""
    sel = [r for r in rows if r["shape"] in names]
    return {"shape": "mean"} | {c: float(np.mean([r[c] for r in sel])) for c in COLS if all(r.get(c) is not None for r in sel)}


def oracle_table(res: dict, ratio: int) -> str:
    """Every method's means over the oracle's (meshed) shapes, the oracle last: the floor the sampling sets."""
    names = {r["shape"] for r in res["methods"]["oracle"]["rows"] if r["shape"] != "mean"}
    lines = [f"x{ratio:g} over the {len(names)} shapes with meshes, x1e-3; `oracle`: an independent Poisson-disk sample "
             "of each test mesh scored like a prediction", "", "| method | CD | HD | P2F | CD (gt frame) | HD (gt frame) |",
             "|---|" + "---:|" * 5]
    for m, v in res["methods"].items():
        mean = subset_mean(v["rows"], names)
        lines.append(f"| {m} | " + " | ".join(_cell(mean, c) for c in COLS) + " |")
    return "\n".join(lines)


def seeds_table(results: list[dict], ratio: int) -> str:
    """Per shape: the model's mean +- std over several runs' results (one results_x<r>.json each, e.g. one per
    training seed) beside the midpoint baseline and the input, CD/HD/P2F in the own frame and CD/HD in the gt frame;
    then on how many shapes the runs' mean beats midpoints."""
    names = ("CD", "HD", "P2F", "CD (gt frame)", "HD (gt frame)")
    per = [{r["shape"]: r for r in res["methods"]["model"]["rows"]} for res in results]
    ref = {m: {r["shape"]: r for r in results[0]["methods"][m]["rows"]} for m in ("midpoint", "input")}
    lines = [f"x{ratio:g}, x1e-3, {len(results)} runs: ours as mean ± std over the runs; midpoint and input are "
             "deterministic", "", "| shape | " + " | ".join(f"{n} {m}" for n in names for m in ("ours", "midpoint",
                                                                                              "input")) + " |",
             "|---|" + "---:|" * 15]
    wins, scored = dict.fromkeys(COLS, 0), dict.fromkeys(COLS, 0)
    for shape in per[0]:
        cells = []
        for c in COLS:
            vals = [p[shape].get(c) for p in per]
            ours = "-" if None in vals else f"{_cell({c: float(np.mean(vals))}, c)} ± {_cell({c: float(np.std(vals))}, c)}"
            cells += [ours, _cell(ref["midpoint"][shape], c), _cell(ref["input"][shape], c)]
            if shape != "mean" and None not in vals:
                scored[c] += 1
                wins[c] += float(np.mean(vals)) < ref["midpoint"][shape][c]
        lines.append(f"| {'**mean**' if shape == 'mean' else shape} | " + " | ".join(cells) + " |")
    lines += ["", "Shapes where the runs' mean beats midpoints: "
              + ", ".join(f"{n} {wins[c]}/{scored[c]}" for n, c in zip(names, COLS))]
    return "\n".join(lines)


def run_method(fn, files: list[Path], out: Path) -> float:
    """fn(cloud, shape name) for each input not yet in out/ (cached); mean seconds per newly computed shape."""
    out.mkdir(parents=True, exist_ok=True)
    times = []
    for f in files:
        dst = out / f"{f.stem}.xyz"
        if dst.is_file():
            continue
        x = read_cloud(f)
        t = time.perf_counter()
        y = fn(x, f.stem)
        times.append(time.perf_counter() - t)
        write_cloud(dst, y)
    return float(np.mean(times)) if times else float("nan")


def _cell(row: dict, col: str) -> str:
    v = row.get(col)
    return "-" if v is None else f"{v:.4f}" if col.startswith("cd") else f"{v:.3f}"


def markdown(rows: dict[str, list[dict]], ratio: int) -> str:
    """Means of every method, then per shape ours vs midpoint (own frame CD/HD/P2F, gt frame CD/HD), x1e-3."""
    names = ("CD", "HD", "P2F", "CD (gt frame)", "HD (gt frame)")
    lines = [f"x{ratio:g}, x1e-3, PU-GCN convention; own frame: each cloud by its own centroid/radius; gt frame: both "
             "by the ground truth's", "", "| method | " + " | ".join(names) + " |", "|---|" + "---:|" * 5]
    for m, rs in rows.items():
        mean = next(r for r in rs if r["shape"] == "mean")
        lines.append(f"| {m} | " + " | ".join(_cell(mean, c) for c in COLS) + " |")
    pair = [m for m in ("model", "midpoint") if m in rows] or list(rows)[:1]  # e.g. only prior and input asked
    lines += ["", "| shape | " + " | ".join(f"{n} {m}" for n in names for m in pair) + " |",
              "|---|" + "---:|" * (5 * len(pair))]
    for r0 in rows[pair[0]]:
        by = {m: next(r for r in rows[m] if r["shape"] == r0["shape"]) for m in pair}
        name = "**mean**" if r0["shape"] == "mean" else r0["shape"]
        lines.append(f"| {name} | " + " | ".join(_cell(by[m], c) for c in COLS for m in pair) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--run", type=Path, default=None, help="Run folder (default: the shipped model).")
    ap.add_argument("--test-dir", type=Path, default=PC / "pugan_test")
    ap.add_argument("--ratios", type=float, nargs="+", default=[4.0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0],
                    help="Input noise levels (x each input's radius); 0 = clean.")
    ap.add_argument("--summary", action="store_true", help="Only print the means of every setting in OUT.")
    ap.add_argument("--methods", nargs="+", default=["model", "prior", "midpoint", "input"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--merge", default="auto", help="Merge of the network's patch outputs (auto = inner up to 2^20).")
    ap.add_argument("--no-fill", dest="fill", action="store_false",
                    help="Model and prior without the hole-filling candidates (pointcloud/holefill.py).")
    ap.add_argument("--report", action="store_true", help="Only rewrite the markdown tables from the JSON results.")
    ap.add_argument("--seeds-from", type=Path, nargs="+", default=None,
                    help="With --report: OUT folders of other runs (e.g. other training seeds) pooled with --out into "
                         "OUT/seeds_x<r>.md (mean ± std per shape).")
    a = ap.parse_args()
    if a.summary:
        print(summary_table(a.out))
        return
    if a.report:
        for ratio in a.ratios:
            for level in a.noise:
                key = setting(ratio, level)
                res = json.loads((a.out / f"results_{key}.json").read_text())
                (a.out / f"results_{key}.md").write_text(report(res, ratio) + "\n")
                print(report(res, ratio))
                if a.seeds_from:
                    pooled = [res] + [json.loads((d / f"results_{key}.json").read_text()) for d in a.seeds_from]
                    (a.out / f"seeds_{key}.md").write_text(seeds_table(pooled, ratio) + "\n")
                    print(seeds_table(pooled, ratio))
        return
    threads = configure_threads(a.threads)
    dev = torch.device("cpu")
    model = load_upsampler(a.run, dev)
    untrained = model_from_spec(model_spec(model)).eval()
    files = sorted((a.test_dir / "input_2048").glob("*.xyz"))
    mesh_dir = a.test_dir / "meshes"
    leak = None
    if "model" in a.methods:
        leak = overlap_report(a.run or DEFAULT_MODEL, files, a.test_dir / "gt_8192", mesh_dir)
    fns = {
        "model": lambda r: lambda x, _: upsample_cloud(model, x, r, merge=a.merge, fill=a.fill),
        "prior": lambda r: lambda x, _: upsample_cloud(untrained, x, r, merge=a.merge, fill=a.fill),
        "midpoint": lambda r: lambda x, _: midpoint_upsample(x, r).numpy(),
        "input": lambda r: lambda x, _: x,
        "oracle": lambda r: oracle_fn(mesh_dir, round(2048 * r)),
    }
    for ratio in a.ratios:
        n_gt = round(2048 * ratio)
        gt_dir = a.test_dir / "gt_8192" if n_gt == 8192 else gt_dense(mesh_dir, a.out / f"gt_{n_gt}", n_gt)
        use = [f for f in files if (gt_dir / f"{f.stem}.xyz").is_file()]
        for level in a.noise:
            key = setting(ratio, level)
            res: dict = {"ratio": ratio, "noise": level, "threads": threads, "leak": leak, "gt_dir": str(gt_dir),
                         "methods": {}}
            for m in a.methods:
                if m == "oracle" and level:
                    continue
                pred = a.out / key / m
                fn, files_m, gt_m = fns[m](ratio), use, gt_dir
                if m == "oracle":
                    files_m = meshed(use, mesh_dir)
                    gt_m = subset_gt(gt_dir, files_m, a.out / f"gt_x{ratio:g}_meshed")
                noisy = (lambda f, lv=level: lambda x, stem: f(add_noise(x, lv, stem), stem))(fn) if level else fn
                sec = run_method(noisy, files_m, pred)
                res["methods"][m] = {"seconds_per_shape": sec, "rows": score_folder(pred, gt_m, mesh_dir, "pugcn", dev)}
                print(f"{key} {m}: " + json.dumps({k: res['methods'][m]['rows'][-1][k] for k in COLS}), flush=True)
            (a.out / f"results_{key}.json").write_text(json.dumps(res, indent=1, default=str))
            (a.out / f"results_{key}.md").write_text(report(res, ratio) + "\n")
            print(report(res, ratio), flush=True)


def setting(ratio: float, noise: float) -> str:
    """File key of one evaluated setting: x4, x2.5, x4_noise0.01 ..."""
    return f"x{ratio:g}" + (f"_noise{noise:g}" if noise else "")


def summary_table(out: Path) -> str:
    """Means of every method in every OUT/results_<setting>.json: one markdown row per (ratio, noise, method)."""
    rows = []
    for path in out.glob("results_x*.json"):
        res = json.loads(path.read_text())
        for m, v in res["methods"].items():
            mean = next(r for r in v["rows"] if r["shape"] == "mean")
            rows.append((float(res["ratio"]), float(res.get("noise", 0.0)), m, len(v["rows"]) - 1, mean))
    order = {m: i for i, m in enumerate(("model", "prior", "midpoint", "input", "oracle"))}
    rows.sort(key=lambda r: (r[1], r[0], order.get(r[2], 9)))
    lines = ["| ratio | input noise (x radius) | method | shapes | CD | HD | P2F | CD (gt frame) | HD (gt frame) |",
             "|---:|---:|---|---:|" + "---:|" * 5]
    lines += [f"| x{r:g} | {lv:g} | {m} | {n} | " + " | ".join(_cell(mean, c) for c in COLS) + " |"
              for r, lv, m, n, mean in rows]
    return "\n".join(lines)


def report(res: dict, ratio: int) -> str:
    """The markdown of one ratio's results: means and per-shape rows, then the oracle table when it was run."""
    methods = {m: v["rows"] for m, v in res["methods"].items() if m != "oracle"}
    text = markdown(methods, ratio)
    return text + ("\n\n" + oracle_table(res, ratio) if "oracle" in res["methods"] else "")


if __name__ == "__main__":
    main()
