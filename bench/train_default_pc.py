"""Training recipe of the default point-cloud model on honest data, end to end through the CLI.

Data: the 14 shared training meshes (none of them a PU-GAN test shape) plus procedural shapes; the 27-shape
PU-GAN test set is only evaluated, and `pc eval` refuses the run if any test shape leaked into the data.
Per seed: make-data (once) -> pc train -> pc eval (both normalisation frames); a JSON summary with
mean +- std over seeds of CD / HD / P2F (x1e-3) for the model and the midpoint baseline.

    python bench/train_default_pc.py --out runs/default_pc --seeds 0 1 2 --train-minutes 60 --device cuda
    # smoke check on a shared CPU (a few minutes):
    nice -n 19 python bench/train_default_pc.py --out /tmp/pc_smoke --procedural 8 --patches-per-mesh 8 \\
        --train-minutes 2 --batch-size 8 --test-shapes 3 --device cpu
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from affcli.common.threads import thread_scope

ROOT = Path(__file__).resolve().parents[1]
PC = ROOT.parent / "shared" / "data" / "pointcloud"
DEFAULT_OPTS = ["prior=phong", "prior_features=true", "offset_bound=1.0", "self_attention=true"]
DEFAULT_HAUSDORFF = 0.0  # Chamfer only: the soft-Hausdorff term lost on held-out val_cd (bench/ablate_pc.py)


def cli(*args: str) -> str:
    """Run `python -m affcli ...`, echo and return its output; stop on failure."""
    cmd = [sys.executable, "-m", "affcli", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(args[:2])}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    print(res.stdout[-1500:], flush=True)
    return res.stdout


def test_subset(test_dir: Path, n: int | None, work: Path) -> Path:
    """The test folder, or a folder of links to its first n shapes (smoke checks)."""
    if not n:
        return test_dir
    sub = work / f"test_first{n}"
    names = sorted(p.stem for p in (test_dir / "input_2048").glob("*.xyz"))[:n]
    for folder, ext in (("input_2048", "xyz"), ("gt_8192", "xyz"), ("meshes", "off")):
        (sub / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            src, dst = test_dir / folder / f"{name}.{ext}", sub / folder / f"{name}.{ext}"
            if src.is_file() and not dst.exists():
                dst.symlink_to(src)
    return sub


def ship(run: Path, data: Path, recipe: dict, name: str = "clean") -> Path:
    """Copy a run's weights into the package as the shipped weights `name` (clean: the default model; noise: the
    `--weights noise` one), with its training-shape record (names, hashes, fingerprints: what `pc eval`'s leak check
    reads) and the recipe that made it, in the weights' own folder."""
    import shutil

    import h5py

    from affcli.pointcloud.upsample import SHIPPED_WEIGHTS

    target = SHIPPED_WEIGHTS[name]
    home = target.parent
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "model.safetensors", target)
    record = home / f"{target.stem}_data.h5"
    with h5py.File(data, "r") as src, h5py.File(record, "w") as dst:
        dst.create_dataset("fingerprints", data=src["fingerprints"][...].astype(np.float16).astype(np.float32),
                           compression="gzip")
        for key in ("meshes", "mesh_hashes", "procedural", "seed", "excluded"):
            if key in src.attrs:
                dst.attrs[key] = src.attrs[key]
    cfg = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    (home / "config.json").write_text(json.dumps({
        "data": record.name, "model": cfg["model"], "ratio": cfg["ratio"], "model_options": cfg["model_options"],
        "train": {k: cfg.get(k) for k in ("batch_size", "lr", "seed", "inputs", "hausdorff", "val_every", "jitter",
                                          "n_patches",
                                          "n_val_patches", "device_used")},
        "epochs_done": metrics["epochs_done"], "steps_done": metrics["steps_done"], "final_cd": metrics["final_cd"],
        "val_cd_initial": metrics.get("val_cd_initial"),
        "val_cd": metrics.get("val_cd"),
        "recipe": recipe,
    }, indent=1, default=str))
    return target


def summarise(results: list[dict]) -> dict:
    """Mean and std over seeds of each method's mean row, in both normalisation frames (x1e-3)."""
    out: dict = {}
    for method in results[0]["methods"]:
        rows = [next(r for r in res["methods"][method]["rows"] if r["shape"] == "mean") for res in results]
        out[method] = {
            k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
            for k in ("cd", "hd", "p2f_mean", "cd_gt", "hd_gt")
            if all(r.get(k) is not None for r in rows)
        }
    return out


def val_span(metrics: dict) -> str:
    """Held-out val_cd of a run's metrics.json as 'untrained -> last' (x1e-3), or '-' without a val split."""
    val = metrics.get("val_cd") or []
    start = metrics.get("val_cd_initial") or (val[0] if len(val) > 1 else None)  # older runs hold it as val_cd[0]
    return f"{start * 1e3:.4f} -> {val[-1] * 1e3:.4f}" if val and start is not None else "-"


def seeds_report(out: Path, seeds: list[int]) -> str:
    """Markdown of the seeds' runs (OUT/seed<k>: metrics.json, eval_x4_pugcn/results.json): one row per seed and
    mean +- std ours vs midpoints; also OUT/seeds.json with every seed's metrics and eval rows. Per-shape tables over
    seeds: bench/eval_default_pc.py --report --seeds-from."""
    from eval_default_pc import COLS, _cell  # bench/ is on sys.path when run as a script

    runs = {s: {"metrics": json.loads((out / f"seed{s}" / "metrics.json").read_text()),
                "eval": json.loads((out / f"seed{s}" / "eval_x4_pugcn" / "results.json").read_text())} for s in seeds}
    (out / "seeds.json").write_text(json.dumps({"seeds": runs}, indent=1, default=str))
    names = ("CD", "HD", "P2F", "CD (gt)", "HD (gt)")
    lines = ["| seed | steps | val CD x1e-3 (untrained -> trained) | " + " | ".join(names) + " |",
             "|---|---:|---|" + "---:|" * 5]
    for s, run in runs.items():
        mean = next(r for r in run["eval"]["methods"]["model"]["rows"] if r["shape"] == "mean")
        lines.append(f"| {s} | {run['metrics']['steps_done']} | {val_span(run['metrics'])} | "
                     + " | ".join(_cell(mean, k) for k in COLS) + " |")
    summary = summarise([run["eval"] for run in runs.values()])
    lines += ["", f"| method (x4, {len(seeds)} seeds) | " + " | ".join(names) + " |", "|---|" + "---:|" * 5]
    for method, label in (("model", "PU-MFA (ours, shipped recipe)"), ("midpoint", "kNN midpoints (no network)")):
        st = summary[method]
        cells = [f"{_cell({k: st[k]['mean']}, k)} ± {_cell({k: st[k]['std']}, k)}" if k in st else "-" for k in COLS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    (out / "seeds.md").write_text(text + "\n")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--procedural", type=int, default=60, help="Generated shapes beside the 14 meshes.")
    ap.add_argument("--patches-per-mesh", type=int, default=32)
    ap.add_argument("--train-minutes", type=float, default=13.0)
    ap.add_argument("--epochs", type=int, default=1000, help="Upper bound; --train-minutes usually stops first.")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="Stop after this many steps (equal work on a busy machine; give a large --train-minutes).")
    ap.add_argument("--batch-size", type=int, default=8, help="8 on a CPU (more steps per minute); 64 on a GPU.")
    ap.add_argument("--lr", type=float, default=2e-3, help="2e-3 for runs of minutes (paper: 1e-4 for 100 epochs).")
    ap.add_argument("--hausdorff", type=float, default=DEFAULT_HAUSDORFF,
                    help="Weight of the soft Hausdorff loss (ours; 0: Chamfer only).")
    ap.add_argument("--val-every", type=int, default=10, help="Hold out every Nth training shape for val_cd.")
    ap.add_argument("--jitter", type=float, default=0.0, help="Input jitter sigma of the augmentation (test inputs are "
                                                               "clean Poisson-disk samples; pc train's default 0.01).")
    ap.add_argument("--exclude-near", type=Path, default=PC / "pugan_test" / "gt_8192",
                    help="make-data leaves out training shapes the leak check would match to these test clouds.")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--opt", action="append", default=None,
                    help=f"Model option key=value (repeatable; default: the shipped model's, "
                         f"{' '.join(DEFAULT_OPTS)}).")
    ap.add_argument("--test-dir", type=Path, default=PC / "pugan_test")
    ap.add_argument("--test-shapes", type=int, default=None, help="Evaluate only the first N test shapes (smoke).")
    ap.add_argument("--train-only", action="store_true",
                    help="Train the seeds and stop: no test score is seen while a design is still being chosen on "
                         "validation clouds (bench/pc_inference_variants.py run --run OUT/seed<k>).")
    ap.add_argument("--ship", action="store_true", help="Copy the first seed's model into the package as the default.")
    ap.add_argument("--ship-only", action="store_true", help="Only ship an already trained first seed.")
    ap.add_argument("--ship-as", choices=("clean", "noise"), default="clean",
                    help="Which shipped weights --ship / --ship-only replace (noise: the `--weights noise` model).")
    ap.add_argument("--report", action="store_true", help="Only write OUT/seeds.md and seeds.json from the seeds' runs.")
    a = ap.parse_args()
    a.opt = DEFAULT_OPTS if a.opt is None else a.opt
    if a.report:
        print(seeds_report(a.out, a.seeds))
        return

    with thread_scope():
        run_recipe(a)


def run_recipe(a: argparse.Namespace) -> None:
    """make-data once, then train and evaluate each seed; summary.json with mean +- std over the seeds."""
    a.out.mkdir(parents=True, exist_ok=True)
    data = a.out / "train.h5"
    t0 = time.time()
    if not data.is_file():
        cli("pc", "make-data", "--meshes", str(PC / "train_meshes"), "--procedural", str(a.procedural),
            "--patches-per-mesh", str(a.patches_per_mesh), "--exclude-near", str(a.exclude_near), "--out", str(data))
    timing = {"make_data_s": time.time() - t0}
    recipe = vars(a) | {"out": str(a.out), "command": " ".join(["python", *sys.argv])}
    if a.ship_only:
        print(ship(a.out / f"seed{a.seeds[0]}", data, recipe, a.ship_as))
        return
    test = test_subset(a.test_dir, a.test_shapes, a.out)
    results = []
    for seed in a.seeds:
        run = a.out / f"seed{seed}"
        opts = [x for o in a.opt for x in ("--opt", o)]
        t = time.time()
        cli("pc", "train", "--data", str(data), "--out", str(run), "--model", "pu-mfa", "--ratio", "4",
            "--inputs", "fps", "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--lr", str(a.lr),
            "--max-minutes", str(a.train_minutes), "--device", a.device, "--seed", str(seed),
            "--hausdorff", str(a.hausdorff), "--val-every", str(a.val_every), "--jitter", str(a.jitter), *opts,
            *(["--max-steps", str(a.max_steps)] if a.max_steps else []))
        timing[f"train_seed{seed}_s"] = time.time() - t
        if a.train_only:
            continue
        t = time.time()
        cli("pc", "eval", "--run", str(run), "--test-dir", str(test), "--device", a.device, "--renders", "4")
        timing[f"eval_seed{seed}_s"] = time.time() - t
        results.append(json.loads((run / "eval_x4_pugcn" / "results.json").read_text()))
    if a.train_only:
        (a.out / "timing.json").write_text(json.dumps(timing, indent=1))
        return
    summary = {"recipe": vars(a) | {"out": str(a.out), "test_dir": str(test)}, "timing_s": timing,
               "leak": [r["leak"] for r in results], "x4": summarise(results)}
    (a.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if a.ship:
        print("shipped:", ship(a.out / f"seed{a.seeds[0]}", data, recipe, a.ship_as))
    print(seeds_report(a.out, a.seeds))


if __name__ == "__main__":
    main()
