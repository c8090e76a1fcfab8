"""PU-MFA benchmark: upsampling latency / peak memory (2048 points, x4 and x16), then data-making + training +
evaluation on the PU-GAN test set within a wall-clock budget, beside the midpoint baseline, PU-GAN's own x4
outputs and the paper's PU-MFA row. Prints markdown for bench/RESULTS.md and writes --out JSON.

Usage: python bench/pointcloud.py [--device auto|cpu|cuda] [--train-minutes 8] [--budget-minutes 15]
                                  [--out results.json] [--work DIR] [--skip-train]"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from affcli.pointcloud.baselines import midpoint_upsample  # noqa: E402
from affcli.pointcloud.data import make_pugan_h5  # noqa: E402
from affcli.pointcloud.evaluate import evaluate_run, score_pair, seconds  # noqa: E402
from affcli.pointcloud.io import read_cloud, read_mesh, write_cloud  # noqa: E402
from affcli.pointcloud.models import create_model  # noqa: E402
from affcli.pointcloud.runtime import resolve_device  # noqa: E402
from affcli.pointcloud.sampling import poisson_disk_sample  # noqa: E402
from affcli.pointcloud.train import TrainConfig, train  # noqa: E402
from affcli.pointcloud.upsample import default_batch, upsample_cloud  # noqa: E402

SHARED = Path(os.environ.get("AFFCLI_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))
PC = SHARED / "data" / "pointcloud"
PAPER = {"cd": 0.2326, "hd": 1.094, "p2f_mean": 2.545}
UNSEEN = ("11509_Panda_v4", "13770_Tiger_V1", "Gramme_aligned", "statue_dragon_aligned", "statue_ramesses_aligned",
          "statue_rome_aligned")
EVAL_RESERVE_S = {"cuda": 150.0, "cpu": 900.0}


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated (MiB) or the process's peak resident set (MiB) on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def latency(device: torch.device, model_name: str) -> list[dict]:
    """Seconds and peak memory to upsample the 2048-point camel x4 and x16 with the network and the midpoint baseline."""
    xyz = read_cloud(PC / "pugan_test" / "input_2048" / "camel.xyz")
    model = create_model(model_name, 4).to(device).eval()
    batch = default_batch(device)
    rows = []
    for ratio in (4, 16):
        for name, fn in ((model_name, lambda r=ratio: upsample_cloud(model, xyz, r, batch)),
                         ("midpoint", lambda r=ratio: midpoint_upsample(xyz, r, device))):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sec = seconds(fn, device, repeat=3)
            rows.append({"method": name, "ratio": ratio, "points_in": len(xyz), "seconds": round(sec, 4),
                         "peak_mb": round(peak_memory_mb(device), 1)})
            print(json.dumps({"latency": rows[-1]}), flush=True)
    return rows


def training_meshes(work: Path) -> Path:
    """A folder of links to the shared meshes (pugan_test/meshes + meshes/, first copy of a name wins)."""
    folder = work / "meshes"
    folder.mkdir(parents=True, exist_ok=True)
    for src in (PC / "pugan_test" / "meshes", PC / "meshes"):
        for mesh in sorted(src.glob("*.off")):
            if not (folder / mesh.name).exists():
                os.symlink(mesh.resolve(), folder / mesh.name)
    return folder


def pugan_peer(run: Path, work: Path, device: torch.device) -> list[dict]:
    """PU-GAN's own x4 outputs vs our run and midpoint on PU-GAN's inputs; gt = 8192 Poisson-disk points of the mesh."""
    from affcli.pointcloud.checkpoint import load_model

    model = load_model(run, device) if (run / "model.safetensors").is_file() else None
    rows = []
    for out in sorted((PC / "pugan_x4_outputs").glob("*.xyz")):
        mesh = PC / "meshes" / f"{out.stem}.off"
        v, f = read_mesh(mesh)
        gt = work / "peer_gt" / f"{out.stem}.xyz"
        write_cloud(gt, poisson_disk_sample(v, f, 8192, 0))
        inp = read_cloud(PC / "pugan_test_inputs" / out.name)
        preds = {"PU-GAN (own x4 output)": out}
        mid = work / "peer_pred" / "midpoint" / out.name
        write_cloud(mid, midpoint_upsample(inp, 4, device).cpu().numpy())
        preds["midpoint"] = mid
        if model is not None:
            ours = work / "peer_pred" / "ours" / out.name
            write_cloud(ours, upsample_cloud(model, inp, 4, default_batch(device)))
            preds["ours"] = ours
        for name, pred in preds.items():
            res = score_pair(pred, gt, mesh, "pugcn", str(device))
            rows.append({"shape": out.stem, "method": name, **{k: res[k] for k in ("cd", "hd", "p2f_mean")}})
            print(json.dumps({"peer": rows[-1]}), flush=True)
    return rows


def mean_of(rows: list[dict], shapes: tuple[str, ...] | None = None) -> dict:
    """Mean CD/HD over the named shapes (or the precomputed 'mean' row) of evaluate_run rows."""
    if shapes is None:
        return next(r for r in rows if r["shape"] == "mean")
    sel = [r for r in rows if r["shape"] in shapes]
    return {"cd": float(np.mean([r["cd"] for r in sel])), "hd": float(np.mean([r["hd"] for r in sel])),
            "p2f_mean": None, "n": len(sel)}


def fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def report(res: dict) -> str:
    """Markdown tables for bench/RESULTS.md."""
    lines = [f"Device: {res['device']} ({res['device_name']}); torch {res['torch']}.", "",
             "| method | ratio | seconds (2048 pts) | peak MiB |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | x{r['ratio']} | {r['seconds']:.3f} | {r['peak_mb']:.0f} |" for r in res["latency"]]
    tr = res.get("train")
    if tr:
        lines += ["", f"Training: {tr['patches']} patches from {tr['meshes']} meshes (made in {tr['data_seconds']:.0f}s), "
                      f"{tr['epochs_done']} epochs / {tr['steps_done']} steps in {tr['train_seconds']:.0f}s, "
                      f"batch {tr['batch_size']}, lr {tr['lr']}, inputs {tr.get('inputs')}; train CD first epoch {tr['cd_first'] * 1e3:.3f}e-3 "
                      f"-> last {tr['cd_last'] * 1e3:.3f}e-3."]
    ev = res.get("eval")
    if ev:
        lines += ["", "PU-GAN test set x4 (27 shapes; CD/HD pugcn convention, P2F pooled over the 21 shapes with meshes; "
                      "x1e-3). NOTE: 21 of the 27 test meshes are also the training meshes here (seen); the 6 shapes "
                      "without meshes are unseen.", "",
                  "| method | CD | HD | P2F | CD unseen6 | HD unseen6 |", "|---|---|---|---|---|---|",
                  f"| PU-MFA paper (Lee & Lim 2022) | {PAPER['cd']} | {PAPER['hd']} | {PAPER['p2f_mean']} | - | - |"]
        for name, m in ev.items():
            lines.append(f"| {name} | {fmt(m['all']['cd'])} | {fmt(m['all']['hd'])} | {fmt(m['all']['p2f_mean'])} | "
                         f"{fmt(m['unseen']['cd'])} | {fmt(m['unseen']['hd'])} |")
    if res.get("peer"):
        lines += ["", "PU-GAN's own inputs (pugan_test_inputs), gt = 8192 Poisson-disk points of meshes/<shape>.off:", "",
                  "| shape | method | CD | HD | P2F |", "|---|---|---|---|---|"]
        lines += [f"| {r['shape']} | {r['method']} | {fmt(r['cd'])} | {fmt(r['hd'])} | {fmt(r['p2f_mean'])} |"
                  for r in res["peer"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="pu-mfa")
    ap.add_argument("--train-minutes", type=float, default=8.0)
    ap.add_argument("--budget-minutes", type=float, default=15.0, help="Wall clock for everything.")
    ap.add_argument("--patches-per-mesh", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3, help="1e-3 for a minutes-long run (the paper: 1e-4, 100 epochs).")
    ap.add_argument("--epochs", type=int, default=1000, help="Upper bound; the time budget usually stops first.")
    ap.add_argument("--work", type=Path, default=None, help="Folder for data, run and predictions (default: temp).")
    ap.add_argument("--inputs", default="fps", help="Training inputs: fps (uniform, like the test inputs) or h5.")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("results_pointcloud.json"))
    args = ap.parse_args()
    t0 = time.time()
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(os.cpu_count() or 1, 16)))
    work = args.work or Path(tempfile.mkdtemp(prefix="pc_bench_"))
    res: dict = {"device": str(device), "torch": torch.__version__, "host": platform.node(),
                 "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                 "args": {k: str(v) for k, v in vars(args).items()}, "paper_pu_mfa": PAPER}
    res["latency"] = latency(device, args.model)
    run = work / "run"
    if not args.skip_train:
        t = time.time()
        meshes = training_meshes(work)
        h5 = make_pugan_h5(meshes, work / "train.h5", patches_per_mesh=args.patches_per_mesh)
        data_s = time.time() - t
        left = args.budget_minutes * 60 - (time.time() - t0) - EVAL_RESERVE_S[device.type]
        minutes = max(0.5, min(args.train_minutes, left / 60))
        print(json.dumps({"data_seconds": round(data_s, 1), "train_minutes": round(minutes, 2)}), flush=True)
        cfg = TrainConfig(data=str(h5), out=str(run), model=args.model, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, device=str(device), max_minutes=minutes,
                          inputs=args.inputs)
        t = time.time()
        m = train(cfg)
        hist = m["epochs"]
        res["train"] = {"meshes": len(list(meshes.iterdir())), "patches": json.loads((run / "config.json").read_text())[
            "n_patches"], "data_seconds": data_s, "train_seconds": time.time() - t, "epochs_done": m["epochs_done"],
                        "steps_done": m["steps_done"], "batch_size": args.batch_size, "lr": args.lr, "inputs": args.inputs,
                        "cd_first": hist[0]["cd"], "cd_last": hist[-1]["cd"], "curve": [h["cd"] for h in hist]}
    else:
        create_model(args.model, 4)
        from affcli.pointcloud.checkpoint import save_model

        save_model(create_model(args.model, 4), run)
    t = time.time()
    ev = evaluate_run(run, PC / "pugan_test", PC / "pugan_test" / "meshes", "pugcn", 4, str(device), renders=3,
                      out_dir=work / "eval")
    res["eval_seconds"] = time.time() - t
    res["eval"] = {("PU-MFA (ours, short run)" if k == "model" else "midpoint (no network)"): {
        "all": mean_of(v["rows"]), "unseen": mean_of(v["rows"], UNSEEN), "seen": mean_of(
            v["rows"], tuple(r["shape"] for r in v["rows"] if r["shape"] not in UNSEEN + ("mean",))),
        "seconds_per_shape": v["seconds_per_shape"], "rows": v["rows"]} for k, v in ev["methods"].items()}
    res["peer"] = pugan_peer(run, work, device)
    res["renders"] = str(work / "eval" / "renders")
    res["total_seconds"] = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(report(res))
    print(f"\ntotal {res['total_seconds']:.0f}s; results: {args.out}; work: {work}")
    if args.work is None and os.environ.get("PC_BENCH_KEEP") != "1":
        shutil.copytree(work / "eval" / "renders", args.out.parent / "pc_bench_renders", dirs_exist_ok=True)


if __name__ == "__main__":
    main()
