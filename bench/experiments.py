"""Folds, ensembles and search on a demo-sized synthetic cache (6 videos x 90 frames, visual + audio, EXPR):
fold determinism and coverage, three seeds vs their ensembles, a 12-trial Optuna search, with wall times.

    python bench/experiments.py --out bench/results/experiments.json [--epochs 8]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the figures.")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--trials", type=int, default=12)
    args = ap.parse_args()

    import polars as pl
    from rich.console import Console

    from affcli.common.runs import read_json
    from affcli.heads.ablate.grid import grid_from_dict
    from affcli.heads.ablate.search import run_search
    from affcli.heads.config import RunConfig
    from affcli.heads.infer.ensemble import build_ensemble
    from affcli.heads.infer.predict import evaluate_run
    from affcli.heads.train.folds import OOF_FILE, run_training
    from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache, labels = make_synthetic(root)
        base = {"task": "expr", "features": [VISUAL, AUDIO], "cache": str(cache), "labels": str(labels),
                "epochs": args.epochs, "device": "cpu", "window": 16, "stride": 8, "batch_size": 32, "d_model": 32,
                "plots": False, "warmup": 0}
        t = time.perf_counter()
        a = run_training(RunConfig.from_dict({**base, "folds": 3, "out": str(root / "cv_a")}))
        res["folds_s"] = time.perf_counter() - t
        b = run_training(RunConfig.from_dict({**base, "folds": 3, "out": str(root / "cv_b")}))
        oof = pl.read_parquet(root / "cv_a" / OOF_FILE).filter(pl.col("mask_expr"))
        res["folds"] = {"k": 3, "fold_main": [f["main"] for f in a["folds"]], "main": a["main"],
                        "main_std": a["main_std"], "oof_main": a["oof"]["main"],
                        "same_assignment": read_json(root / "cv_a" / "folds.json")["folds"]
                        == read_json(root / "cv_b" / "folds.json")["folds"],
                        "same_scores": [f["main"] for f in a["folds"]] == [f["main"] for f in b["folds"]],
                        "labelled_frames": oof.height,
                        "frames_predicted_twice": int((oof.group_by("video", "frame").len()["len"] > 1).sum())}
        runs = []
        for seed in (0, 1, 2):
            run_training(RunConfig.from_dict({**base, "seed": seed, "out": str(root / f"seed{seed}")}))
            runs.append(root / f"seed{seed}")
        res["ensembles"] = {}
        for method in ("mean", "vote", "weighted"):
            t = time.perf_counter()
            e = build_ensemble(runs, root / f"ens_{method}", method)
            res["ensembles"][method] = {"members": [m["main"] for m in e["members"]],
                                        "members_mean": e["members_mean"], "ensemble": e["main"],
                                        "evaluate": evaluate_run(root / f"ens_{method}")["main"],
                                        "weights": [m["weight"] for m in e["members"]],
                                        "build_s": time.perf_counter() - t}
        grid = grid_from_dict({"base": {**{k: v for k, v in base.items() if k not in ("cache", "labels")},
                                        "tensorboard": False, "save_predictions": False},
                               "axes": {"lr": {"log": [1e-4, 1e-1]}, "window": {"int": [8, 32], "step": 8},
                                        "d_model": [16, 32]}})
        t = time.perf_counter()
        s = run_search(grid, root / "search", args.trials, cache, labels, None, Console(quiet=True))
        res["search"] = {"trials": s["trials"], "seconds": time.perf_counter() - t, "best": s["best"]}
    print(json.dumps(res, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
