"""Evaluate a trained run on a PU-GAN-layout test folder (input_N/, gt_rN/, meshes/) beside the midpoint baseline."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from affcli.common.progress import progress_bar
from affcli.common.runs import write_json
from affcli.common.threads import configure_threads
from affcli.pointcloud.baselines import midpoint_upsample
from affcli.pointcloud.errors import PointCloudError
from affcli.pointcloud.io import read_cloud, read_mesh, write_cloud
from affcli.pointcloud.leak import overlap_report
from affcli.pointcloud.metrics import SCORE_KEYS, evaluate_clouds, evaluate_folder
from affcli.pointcloud.runtime import resolve_device
from affcli.pointcloud.noise import add_noise
from affcli.pointcloud.upsample import DEFAULT_MODEL, check_ratio, default_batch, load_upsampler, output_points, upsample_cloud

SCALE = 1e3
FRAMES = {  # own: each cloud by its own centroid and radius (PU-GCN's code); gt: both by the ground truth's
    "own": (("cd", "hd", "p2f_mean"), ("CD", "HD", "P2F"), "each cloud normalised by its own centroid/radius"),
    "gt": (("cd_gt", "hd_gt"), ("CD", "HD"), "both clouds normalised by the ground truth's centroid/radius"),
}


def test_layout(test_dir: str | os.PathLike, ratio: float) -> tuple[list[Path], Path, int]:
    """(input files, gt folder, n_in) of a test folder holding input_<n>/ and gt_<round(ratio n)>/."""
    test_dir = Path(test_dir)
    ins = sorted(test_dir.glob("input_*"))
    if not ins:
        raise PointCloudError(f"{test_dir}: no input_<N>/ folder (PU-GAN test layout: input_2048/, gt_8192/)")
    n_in = int(ins[0].name.split("_")[1])
    gt_dir = test_dir / f"gt_{output_points(n_in, ratio)}"
    if not gt_dir.is_dir():
        raise PointCloudError(f"{test_dir}: no {gt_dir.name}/ ground truth for x{ratio:g} of {n_in}-point inputs")
    files = sorted(p for p in ins[0].iterdir() if p.suffix.lower() in (".xyz", ".ply", ".npy", ".bin"))
    if not files:
        raise PointCloudError(f"{ins[0]}: no input clouds")
    return files, gt_dir, n_in


def upsample_folder(fn: Callable[[np.ndarray], np.ndarray], files: list[Path], out_dir: Path, label: str) -> float:
    """Write fn(cloud) for each file into out_dir (same stem, .xyz); returns the mean seconds per shape."""
    total = 0.0
    with progress_bar(transient=True) as bar:
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
        for k in SCORE_KEYS:
            row[k] = None if row[k] is None else row[k] * SCALE
    return rows


def evaluate_run(
    run: str | os.PathLike | None,
    test_dir: str | os.PathLike,
    mesh_dir: str | os.PathLike | None = None,
    convention: str = "pugcn",
    ratio: float = 4,
    device: str = "auto",
    renders: int = 3,
    baseline: bool = True,
    out_dir: str | os.PathLike | None = None,
    allow_overlap: bool = False,
    noise: float = 0.0,
    noise_seed: int = 0,
    fill: bool = True,
) -> dict[str, Any]:
    """Upsample every test input with the run's model (and the midpoint baseline), score, render; results dict.
    noise > 0: every method gets the same seeded noisy inputs (sigma = noise x each cloud's radius, written to
    OUT/input; scored as the `input` row) and is scored against the clean ground truths.

    Refuses a run whose training data holds a test shape (by name, mesh hash or fingerprint) unless allow_overlap."""
    dev = resolve_device(device)
    ratio = check_ratio(ratio)
    configure_threads()
    model = load_upsampler(run, dev)
    run = DEFAULT_MODEL if run is None else run
    files, gt_dir, n_in = test_layout(test_dir, ratio)
    mesh_dir = (
        Path(mesh_dir) if mesh_dir else (Path(test_dir) / "meshes" if (Path(test_dir) / "meshes").is_dir() else None)
    )
    leak = overlap_report(run, files, gt_dir, mesh_dir)
    if leak["overlap"] and not allow_overlap:
        shown = ", ".join(f"{o['test']}={o['train']} ({o['by']})" for o in leak["overlap"][:5])
        raise PointCloudError(
            f"{run}: trained on {len(leak['overlap'])} test shape(s): {shown}; pass --allow-overlap to evaluate anyway"
        )
    home = Path(run) if Path(run).is_dir() else Path(f"eval_{Path(run).stem}")  # never inside the package
    out = Path(out_dir) if out_dir else home / (f"eval_x{ratio:g}_{convention}" + (f"_noise{noise:g}" if noise else ""))
    if noise:
        for f in files:
            write_cloud(out / "input" / f"{f.stem}.xyz", add_noise(read_cloud(f), noise, f.stem, noise_seed))
        files = [out / "input" / f"{f.stem}.xyz" for f in files]
    batch = default_batch(dev)
    methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "model": lambda x: upsample_cloud(model, x, ratio, batch, fill=fill)
    }
    if baseline:
        methods["midpoint"] = lambda x: midpoint_upsample(x, ratio, dev).cpu().numpy()
    result: dict[str, Any] = {
        "run": str(run),
        "test_dir": str(test_dir),
        "ratio": ratio,
        "convention": convention,
        "mesh_dir": str(mesh_dir) if mesh_dir else None,
        "device": str(dev),
        "noise": noise,
        "noise_seed": noise_seed,
        "fill": fill,
        "leak": leak,
        "methods": {},
    }
    for name, fn in methods.items():
        sec = upsample_folder(fn, files, out / name, name)
        rows = score_folder(out / name, gt_dir, mesh_dir, convention, dev)
        result["methods"][name] = {"seconds_per_shape": sec, "rows": rows}
    if noise:
        result["methods"]["input"] = {"seconds_per_shape": 0.0,
                                      "rows": score_folder(out / "input", gt_dir, mesh_dir, convention, dev)}
    by_stem = {f.stem: f for f in files}
    result["renders"] = []
    for label, row in render_choice(result["methods"]["model"]["rows"], mesh_dir, renders):
        from affcli.pointcloud.render import render_before_after

        f = by_stem[row["shape"]]
        clouds = {m: read_cloud(out / m / f"{f.stem}.xyz") for m in methods}
        png = out / "renders" / f"{label}_{f.stem}.png"
        render_before_after(
            read_cloud(f),
            clouds.pop("model"),
            png,
            f"{f.stem} x{ratio:g} ({label}: CD {row['cd']:.3f}, HD {row['hd']:.3f} x1e-3)",
            {"midpoint": clouds["midpoint"]} if "midpoint" in clouds else None,
        )
        result["renders"].append(str(png))
    write_json(out / "results.json", result)
    _write_csv(result, out / "results.csv")
    return result


def render_choice(rows: list[dict[str, Any]], mesh_dir: Path | None, n: int) -> list[tuple[str, dict[str, Any]]]:
    """n shapes to render, worst and best by the model's CD in turn, among the shapes with a mesh when any has one."""
    shapes = [r for r in rows if r["shape"] != "mean"]
    with_mesh = [r for r in shapes if r.get("p2f_mean") is not None]
    ranked = sorted(with_mesh or shapes, key=lambda r: r["cd"])
    picks: list[tuple[str, dict[str, Any]]] = []
    lo, hi = 0, len(ranked) - 1
    while len(picks) < min(n, len(ranked)):
        if len(picks) % 2 == 0:
            picks.append((f"worst{len(ranked) - hi}", ranked[hi]))
            hi -= 1
        else:
            picks.append((f"best{lo + 1}", ranked[lo]))
            lo += 1
    return picks


def _write_csv(result: dict[str, Any], path: Path) -> None:
    """Long table: method, shape, cd, hd, p2f_mean, p2f_std (x1e-3)."""
    import polars as pl

    rows = [{"method": m, **r} for m, v in result["methods"].items() for r in v["rows"]]
    pl.DataFrame(rows).write_csv(path)


def results_table(result: dict[str, Any], title: str = "", frame: str = "own"):
    """Rich table: one row per shape, CD/HD(/P2F) (x1e-3) per method in one normalisation frame, mean row last."""
    from rich.table import Table

    keys, headers, what = FRAMES[frame]
    methods = list(result["methods"])
    noisy = f"; input noise {result['noise']:g} x radius" if result.get("noise") else ""
    table = Table(title=title or f"x{result['ratio']:g} ({result['convention']}, x1e-3; {what}{noisy})")
    table.add_column("shape")
    for m in methods:
        for k in headers:
            table.add_column(f"{m} {k}", justify="right")
    per = {m: {r["shape"]: r for r in result["methods"][m]["rows"]} for m in methods}
    for shape in per[methods[0]]:
        cells = []
        for m in methods:
            r = per[m].get(shape, {})
            cells += ["-" if r.get(k) is None else f"{r[k]:.3f}" for k in keys]
        table.add_row(shape, *cells, style="bold" if shape == "mean" else None)
    return table


def levels_table(results: list[dict[str, Any]]):
    """Rich table of the mean rows of several evaluate_run results (one per input-noise level): CD/HD/P2F x1e-3."""
    from rich.table import Table

    table = Table(title=f"x{results[0]['ratio']:g} means by input noise ({results[0]['convention']}, x1e-3, own frame)")
    for col, just in (("noise x radius", "right"), ("method", "left"), ("CD", "right"), ("HD", "right"), ("P2F", "right")):
        table.add_column(col, justify=just)
    for res in results:
        for method, v in res["methods"].items():
            mean = next(r for r in v["rows"] if r["shape"] == "mean")
            table.add_row(f"{res.get('noise', 0):g}", method,
                          *("-" if mean.get(k) is None else f"{mean[k]:.3f}" for k in ("cd", "hd", "p2f_mean")))
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
    return {k: (v * SCALE if k in SCORE_KEYS and v is not None else v) for k, v in res.items()}


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
