"""What `affcli ablate GRID ...` and `affcli ablate report DIR` do; returns the exit status."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

from affcli.heads.ablate.execute import run_grid
from affcli.heads.commands import AblateOptions
from affcli.heads.ablate.run import auto_jobs
from affcli.heads.ablate.grid import GridError, load_grid
from affcli.heads.ablate.report import STD_NOTE, Table, build_report
from affcli.heads.ablate.validate import build_runs, grid_meta

EXIT_OK, EXIT_FAILED_RUNS, EXIT_REFUSED = 0, 1, 2


def ablate_cli(target: str, report_dir: Path | None, o: AblateOptions, console: Console | None = None) -> int:
    """`affcli ablate GRID ...` runs a grid; `affcli ablate report DIR` rebuilds the tables of a finished one."""
    console = console or Console()
    if target == "report":
        if report_dir is None:
            console.print("[red]refused[/red]: affcli ablate report DIR: give the ablation folder")
            return EXIT_REFUSED
        return report_command(report_dir, console)
    if report_dir is not None:
        console.print(f"[red]refused[/red]: unexpected argument {report_dir}; did you mean "
                      f"`affcli ablate report {report_dir}`?")
        return EXIT_REFUSED
    if o.search not in (None, "optuna"):
        console.print(f"[red]refused[/red]: --search {o.search!r}: the search engine is 'optuna'")
        return EXIT_REFUSED
    return ablate_command(Path(target), o.cache, o.labels, o.out, o.jobs, o.dask_local, o.scheduler, o.device,
                          o.dry_run, console, search=o.search, trials=o.trials, mlflow=o.mlflow)


def feature_bytes(cache: str | Path | None, features: list[str]) -> int:
    """Bytes the run's feature sets take as float32 on the device (sizing for --jobs 0)."""
    if not cache or not features:
        return 0
    from affcli.cache.store import FeatureStore

    store = FeatureStore(cache, mode="r")
    total = 0
    for fs in features:
        dim = int(store.fingerprint(fs).get("dim") or 0)
        total += sum(int(store.video_attrs(fs, v).get("n_frames", 0)) for v in store.videos(fs)) * dim * 4
    return total


def print_tables(tables: list[Table], console: Console) -> None:
    """Tables as rendered markdown, plus where they were written."""
    for t in tables:
        console.print(Markdown(f"**{t.task}** ({STD_NOTE}; best per column in bold)\n\n{t.markdown}"))
        if t.files:
            console.print("written: " + ", ".join(str(p) for p in t.files.values()))


def ablate_command(grid_path: Path, cache: Path | None, labels: Path | None, out: Path | None, jobs: int = 1,
                   dask_local: int = 0, scheduler: str | None = None, device: str | None = None,
                   dry_run: bool = False, console: Console | None = None, search: str | None = None,
                   trials: int = 20, mlflow: str | None = None, **run_kw: Any) -> int:
    """Validate the grid (refusing bad ones before any run), execute it (or search it), print and write the tables."""
    console = console or Console()
    if sum(bool(x) for x in (jobs > 1 or jobs == 0, dask_local, scheduler)) > 1:
        console.print("[red]refused[/red]: choose one of --jobs, --dask-local, --scheduler")
        return EXIT_REFUSED
    if out is None and not dry_run:
        console.print("[red]refused[/red]: --out DIR is required")
        return EXIT_REFUSED
    overrides = {k: v for k, v in (("device", device), ("mlflow", mlflow)) if v}
    if search:
        return search_command(grid_path, cache, labels, out, trials, overrides, dry_run, console, jobs=jobs,
                              dask_local=dask_local, scheduler=scheduler, **run_kw)
    try:
        grid = load_grid(grid_path)
        runs = build_runs(grid, cache, labels, overrides or None)
    except GridError as e:
        console.print(f"[red]grid refused[/red] ({grid_path}): {escape(str(e))}", soft_wrap=True, highlight=False)
        return EXIT_REFUSED
    if dry_run:
        for r in runs:
            console.print(f"{r.hash}  {r.name}")
        console.print(f"{len(runs)} runs")
        return EXIT_OK
    cfg = runs[0].config
    if jobs == 0:
        jobs = auto_jobs(str(cfg.get("device", "cpu")), feature_bytes(cfg.get("cache"), list(cfg.get("features") or [])))
        console.print(f"--jobs 0: {jobs} workers")
    console.print(f"{len(runs)} runs -> {out}")
    res = run_grid(runs, out, jobs=jobs, dask_local=dask_local, scheduler=scheduler, console=console,
                   grid_meta=grid_meta(grid), **run_kw)
    print_tables(build_report(out), console)
    n_failed = res.count("failed")
    console.print(f"{res.count('ok')} ok, {n_failed} failed, {res.count('skipped')} skipped in {res.seconds:.1f} s"
                  + (f"; failed runs have error.json and are retried on the next invocation" if n_failed else ""))
    return EXIT_FAILED_RUNS if n_failed else EXIT_OK


def search_command(grid_path: Path, cache: Path | None, labels: Path | None, out: Path | None, trials: int,
                   overrides: dict[str, Any], dry_run: bool, console: Console, **run_kw: Any) -> int:
    """`ablate GRID --search optuna --trials N`: validate the space, run or resume the study, print the tables."""
    from affcli.heads.ablate.search import check_search_grid, run_search, space_of

    try:
        grid = load_grid(grid_path)
        if dry_run:
            check_search_grid(grid, cache, labels, overrides)
            for axis, values in space_of(grid).items():
                console.print(f"{axis}: {values}", highlight=False)
            console.print(f"{trials} trials x {max(1, len(grid.axes.get('seed', [])))} seed(s)")
            return EXIT_OK
        if run_kw.get("jobs", 1) == 0:
            run_kw["jobs"] = auto_jobs(str(overrides.get("device") or grid.base.get("device", "cpu")), 0)
        console.print(f"search: {trials} trials (optuna TPE, median pruning) -> {out}")
        res = run_search(grid, Path(out), trials, cache, labels, overrides, console, **run_kw)
    except GridError as e:
        console.print(f"[red]grid refused[/red] ({grid_path}): {escape(str(e))}", soft_wrap=True, highlight=False)
        return EXIT_REFUSED
    print_tables(build_report(out), console)
    best = res["best"]
    console.print(f"{res['trials']} trials finished or pruned ({res['ran']} in this invocation, {res['seconds']:.1f} s)"
                  + (f"; best trial {best['trial']}: {best['value']:.4f} with {best['params']}" if best else "")
                  + f"; plots: {out}/search_history.png, {out}/search_importance.png", highlight=False, soft_wrap=True)
    return EXIT_OK


def report_command(out: Path, console: Console | None = None) -> int:
    """Rebuild and print the tables of an ablation folder from its finished runs."""
    console = console or Console()
    if not (Path(out) / "runs").is_dir():
        console.print(f"[red]refused[/red]: {out} holds no ablation runs (no runs/ folder)")
        return EXIT_REFUSED
    tables = build_report(out)
    if not tables:
        console.print(f"{out}: no runs recorded yet")
        return EXIT_FAILED_RUNS
    print_tables(tables, console)
    return EXIT_OK
