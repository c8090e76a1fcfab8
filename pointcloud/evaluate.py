"""Evaluate a trained run on a PU-GAN-layout test folder (input_N/, gt_rN/, meshes/) beside the midpoint baseline."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from affcli.common.runs import write_json
from affcli.pointcloud.baselines import midpoint_upsample
from affcli.pointcloud.checkpoint import load_model
from affcli.pointcloud.errors import PointCloudError
from affcli.pointcloud.io import read_cloud, read_mesh, write_cloud
from affcli.pointcloud.metrics import evaluate_clouds, evaluate_folder
from affcli.pointcloud.runtime import progress, resolve_device
from affcli.pointcloud.upsample import default_batch, upsample_cloud

SCALE = 1e3
METRICS = ("cd", "hd", "p2f_mean")


def test_layout(test_dir: str | os.PathLike, ratio: int) -> tuple[list[Path], Path, int]:
    """(input files, gt folder, n_in) of a test folder holding input_<n>/ and gt_<ratio n>/."""
    test_dir = Path(test_dir)
    ins = sorted(test_dir.glob("input_*"))
    if not ins:
        raise PointCloudError(f"{test_dir}: no input_<N>/ folder (PU-GAN test layout: input_2048/, gt_8192/)")
    n_in = int(ins[0].name.split("_")[1])
    gt_dir = test_dir / f"gt_{ratio * n_in}"
    if not gt_dir.is_dir():
        raise PointCloudError(f"{test_dir}: no {gt_dir.name}/ ground truth for x{ratio} of {n_in}-point inputs")
    files = sorted(p for p in ins[0].iterdir() if p.suffix.lower() in (".xyz", ".ply", ".npy", ".bin"))
    if not files:
        raise PointCloudError(f"{ins[0]}: no input clouds")
    return files, gt_dir, n_in


def upsample_folder(fn: Callable[[np.ndarray], np.ndarray], files: list[Path], out_dir: Path, label: str) -> float:
    """Write fn(cloud) for each file into out_dir (same stem, .xyz); returns the mean seconds per shape."""
    total = 0.0
    with progress(transient=True) as bar:
        task = bar.add_task(f"upsample {label}", total=len(files), info="")
        for f in files:
            xyz = read_cloud(f)
            t = time.perf_counter()
            up = fn(xyz)
            total += time.perf_counter() - t
            write_cloud(out_dir / f"{f.stem}.xyz", up)
            bar.update(task, advance=1, info=f.stem)
    return total / len(files)


def score_folder(pred_dir: Path, gt_dir: Path, mesh_dir: Path | None, convention: str, device) -> list[dict[str, Any]]:
    """evaluate_folder rows (per shape + 'mean'), metrics scaled x1e3."""
    df = evaluate_folder(pred_dir, gt_dir, mesh_dir, convention, device=device)
    rows = df.to_dicts()
    for row in rows:
        for k in ("cd", "hd", "p2f_mean", "p2f_std"):
            row[k] = None if row[k] is None else row[k] * SCALE
    return rows


def evaluate_run(
    run: str | os.PathLike,
    test_dir: str | os.PathLike,
    mesh_dir: str | os.PathLike | None = None,
    convention: str = "pugcn",
    ratio: int = 4,
    device: str = "auto",
    renders: int = 3,
    baseline: bool = True,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Upsample every test input with the run's model (and the midpoint baseline), score, render; results dict."""
    dev = resolve_device(device)
    model = load_model(run, dev)
    files, gt_dir, n_in = test_layout(test_dir, ratio)
    mesh_dir = (
        Path(mesh_dir) if mesh_dir else (Path(test_dir) / "meshes" if (Path(test_dir) / "meshes").is_dir() else None)
    )
    out = Path(out_dir) if out_dir else Path(run) / f"eval_x{ratio}_{convention}"
    batch = default_batch(dev)
    methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {"model": lambda x: upsample_cloud(model, x, ratio, batch)}
    if baseline:
        methods["midpoint"] = lambda x: midpoint_upsample(x, ratio, dev).cpu().numpy()
    result: dict[str, Any] = {
        "run": str(run),
        "test_dir": str(test_dir),
        "ratio": ratio,
        "convention": convention,
        "mesh_dir": str(mesh_dir) if mesh_dir else None,
        "device": str(dev),
        "methods": {},
    }
    for name, fn in methods.items():
        sec = upsample_folder(fn, files, out / name, name)
        rows = score_folder(out / name, gt_dir, mesh_dir, convention, dev)
        result["methods"][name] = {"seconds_per_shape": sec, "rows": rows}
    for f in files[:renders]:
        from affcli.pointcloud.render import render_before_after

        clouds = {m: read_cloud(out / m / f"{f.stem}.xyz") for m in methods}
        render_before_after(
            read_cloud(f),
            clouds.pop("model"),
            out / "renders" / f"{f.stem}.png",
            f"{f.stem} x{ratio}",
            {"midpoint": clouds["midpoint"]} if "midpoint" in clouds else None,
        )
    write_json(out / "results.json", result)
    _write_csv(result, out / "results.csv")
    return result


def _write_csv(result: dict[str, Any], path: Path) -> None:
    """Long table: method, shape, cd, hd, p2f_mean, p2f_std (x1e-3)."""
    import polars as pl

    rows = [{"method": m, **r} for m, v in result["methods"].items() for r in v["rows"]]
    pl.DataFrame(rows).write_csv(path)


def results_table(result: dict[str, Any], title: str = ""):
    """Rich table: one row per shape, CD/HD/P2F (x1e-3) per method, the mean row last."""
    from rich.table import Table

    methods = list(result["methods"])
    table = Table(title=title or f"x{result['ratio']} ({result['convention']}, x1e-3)")
    table.add_column("shape")
    for m in methods:
        for k in ("CD", "HD", "P2F"):
            table.add_column(f"{m} {k}", justify="right")
    per = {m: {r["shape"]: r for r in result["methods"][m]["rows"]} for m in methods}
    for shape in per[methods[0]]:
        cells = []
        for m in methods:
            r = per[m].get(shape, {})
            cells += ["-" if r.get(k) is None else f"{r[k]:.3f}" for k in METRICS]
        table.add_row(shape, *cells, style="bold" if shape == "mean" else None)
    return table


def score_pair(
    pred: str | os.PathLike,
    gt: str | os.PathLike,
    mesh: str | os.PathLike | None = None,
    convention: str = "pugcn",
    device: str = "auto",
) -> dict[str, Any]:
    """CD/HD/P2F (x1e-3) of any two cloud files (e.g. a peer's published outputs) with the same metric code."""
    res = evaluate_clouds(
        read_cloud(pred), read_cloud(gt), read_mesh(mesh) if mesh else None, convention, resolve_device(device)
    )
    return {k: (v * SCALE if k in ("cd", "hd", "p2f_mean", "p2f_std") and v is not None else v) for k, v in res.items()}


def seconds(fn: Callable[[], Any], device: torch.device, repeat: int = 3) -> float:
    """Median wall time of fn() after one warm-up call (synchronising CUDA)."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times))
