"""Block ablation of the default point-cloud model: each variant of the shipped recipe trained with the same short
budget (one seed, --max-steps optimisation steps each: equal work however busy the machine; --max-minutes is only a
safety stop), scored x4 on the 27 PU-GAN test shapes (CD/HD in both frames, P2F; x1e-3). The `ablate`
command drives video-head grids only, hence this script.

    nice -n 19 python bench/ablate_pc.py --data /tmp/d_pc/train.h5 --out /tmp/pc_ablation --max-steps 80
    python bench/ablate_pc.py --out /tmp/pc_ablation --report   # tables only

Writes OUT/<variant>/ (run folder + x4 outputs), OUT/ablation.json and OUT/ablation.md."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from eval_default_pc import COLS, _cell, run_method  # bench/ is on sys.path when run as a script
from train_default_pc import DEFAULT_HAUSDORFF
from train_default_pc import DEFAULT_OPTS as BASE
from train_default_pc import PC, cli, val_span
# name -> (what it tests, model options replacing/adding to BASE, soft-Hausdorff weight, trained)
H = DEFAULT_HAUSDORFF
VARIANTS: dict[str, tuple[str, list[str], float, bool]] = {
    "full": ("the shipped recipe", [], H, True),
    "prior only": ("the same network untrained: exactly the phong prior through the pipeline", [], H, False),
    "single scale": ("multi-scale grouping (8,16,32) -> one scale (16)", ["scales=[16]"], H, True),
    "no attention": ("scale fusion by attention -> max, no global cross-resolution attention",
                     ["fusion=max", "global_attention=false"], H, True),
    "no self-attention": ("no multi-head self-attention at the coarsest level", ["self_attention=false"], H, True),
    "shuffle expansion": ("per-copy codes -> one MLP to r*C and reshape", ["expansion=shuffle"], H, True),
    "no prior features": ("the head does not see where its copy starts", ["prior_features=false"], H, True),
    "midpoint prior": ("phong prior -> plain owned midpoints", ["prior=midpoint"], H, True),
    "no prior": ("no prior: offsets from the repeated point (bounded likewise)",
                 ["prior=none", "prior_features=false"], H, True),
    "+ soft-Hausdorff": ("Chamfer + soft-Hausdorff (weight 1)", [], 1.0, True),
    "input jitter": ("augmentation jitters the inputs (sigma 0.01, pc train's default) instead of clean inputs",
                     [], H, True),
}
JITTER = {"input jitter": 0.01}  # per-variant input jitter; others use --jitter


def options(extra: list[str]) -> list[str]:
    """BASE model options with `extra` overriding the same keys."""
    keys = {o.split("=", 1)[0] for o in extra}
    return [o for o in BASE if o.split("=", 1)[0] not in keys] + extra


def train(run: Path, data: Path, opts: list[str], hausdorff: float, jitter: float, a: argparse.Namespace) -> None:
    """`pc train` of one variant (same data, seed, batch, lr and epochs for all)."""
    args = ["pc", "train", "--data", str(data), "--out", str(run), "--model", "pu-mfa", "--ratio", "4",
            "--inputs", "fps", "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--lr", str(a.lr),
            "--max-minutes", str(a.max_minutes), "--max-steps", str(a.max_steps), "--device", "cpu",
            "--seed", str(a.seed), "--hausdorff", str(hausdorff), "--val-every", str(a.val_every),
            "--jitter", str(jitter)]
    cli(*args, *[x for o in opts for x in ("--opt", o)])


def score(model: torch.nn.Module, out: Path, test_dir: Path) -> dict:
    """x4 outputs of every test input (cached in out/) scored against the 8,192-point ground truths."""
    from affcli.pointcloud.evaluate import score_folder
    from affcli.pointcloud.upsample import upsample_cloud

    secs = run_method(lambda x, _: upsample_cloud(model, x, 4), sorted((test_dir / "input_2048").glob("*.xyz")), out)
    rows = score_folder(out, test_dir / "gt_8192", test_dir / "meshes", "pugcn", torch.device("cpu"))
    return {"rows": rows, "seconds_per_shape": None if secs != secs else secs}


def markdown(results: dict) -> str:
    """One row per variant: what changed, training steps, held-out patch Chamfer before/after, test means."""
    lines = ["x4 on the 27 PU-GAN test shapes, x1e-3 (CD/HD: PU-GCN own frame; gt frame: both by the gt's "
             "centroid/radius; P2F pooled over the 21 shapes with meshes); val CD: held-out training shapes' patches, "
             "x1e-3, before -> after training", "",
             "| variant | change | steps | val CD | CD | HD | P2F | CD (gt) | HD (gt) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        mean = next(x for x in r["rows"] if x["shape"] == "mean")
        cells = [_cell(mean, c) for c in COLS]  # rows are x1e-3
        lines.append(f"| {name} | {r['what']} | {r.get('steps', 0)} | {val_span(r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=None, help="make-data HDF5 (as bench/train_default_pc.py makes it).")
    ap.add_argument("--test-dir", type=Path, default=PC / "pugan_test")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=1000, help="Upper bound; --max-minutes usually stops first.")
    ap.add_argument("--max-steps", type=int, default=80, help="Training steps per variant.")
    ap.add_argument("--max-minutes", type=float, default=15.0, help="Safety stop per variant.")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-every", type=int, default=10)
    ap.add_argument("--jitter", type=float, default=0.0, help="Input jitter of every variant but 'input jitter'.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true", help="Only rewrite ablation.md from ablation.json.")
    a = ap.parse_args()
    path = a.out / "ablation.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if not a.report:
        from affcli.common.threads import configure_threads
        from affcli.pointcloud.checkpoint import load_model
        from affcli.common.cli_options import parse_key_values
        from affcli.pointcloud.models import create_model

        configure_threads(a.threads)
        bad = [v for v in a.variants if v not in VARIANTS]
        if bad or a.data is None:
            sys.exit(f"ablate_pc: unknown variant(s) {bad}; valid: {list(VARIANTS)}" if bad else "ablate_pc: give --data")
        for name in a.variants:
            if name in results:
                continue
            what, extra, hausdorff, trained = VARIANTS[name]
            run = a.out / name.replace(" ", "_").replace("+", "plus")
            opts = options(extra)
            entry: dict = {"what": what, "options": opts, "hausdorff": hausdorff, "trained": trained,
                           "jitter": JITTER.get(name, a.jitter)}
            t = time.time()
            if trained:
                if not (run / "metrics.json").is_file():
                    train(run, a.data, opts, hausdorff, JITTER.get(name, a.jitter), a)
                metrics = json.loads((run / "metrics.json").read_text())
                entry |= {"steps": metrics["steps_done"], "val_cd": metrics.get("val_cd"),
                          "val_cd_initial": metrics.get("val_cd_initial"), "train_s": time.time() - t}
                model = load_model(run, "cpu")
            else:
                model = create_model("pu-mfa", 4, **parse_key_values(opts))
            entry |= score(model.eval(), run / "x4", a.test_dir)
            results[name] = entry
            a.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1, default=str))
            print(name, json.dumps({c: next(x for x in entry["rows"] if x["shape"] == "mean")[c] for c in COLS}),
                  flush=True)
    table = markdown(results)
    (a.out / "ablation.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
