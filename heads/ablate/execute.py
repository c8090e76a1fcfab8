"""Run a grid: in-process, a local process pool (pool.py) or a Dask cluster; resumable, failure-isolated, with
progress (one run and its bookkeeping: run.py)."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from affcli.common.progress import progress_bar
from affcli.common.runs import read_json, write_json
from affcli.heads.ablate.grid import RunSpec
from affcli.heads.ablate.pool import early_fork, pool_outcomes
from affcli.heads.ablate.report import GRID_FILE
from affcli.heads.ablate.run import (GridResult, Outcome, Runner, data_loads, is_finished, main_metric, record_failure,
                                     run_one, threads_per_worker)


def _dask_outcomes(todo: list[RunSpec], out_dir: Path, client: Any, runner: Runner | None,
                   threads: int | None) -> Iterator[Outcome]:
    from distributed import as_completed

    futs = {client.submit(run_one, spec, str(out_dir), runner, threads, pure=False,
                          key=f"ablate-{spec.name}-{spec.hash}"): spec for spec in todo}
    for fut in as_completed(futs):
        spec = futs[fut]
        try:
            yield fut.result()
        except Exception as e:  # a killed worker (KilledWorker) or a transfer error
            yield record_failure(spec, out_dir / "runs" / spec.name, e)


def _dask_client(dask_local: int, scheduler: str | None, processes: bool, threads: int) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(n_workers=dask_local, threads_per_worker=1, processes=processes,
                           dashboard_address=None, silence_logs=40,
                           env={"OMP_NUM_THREADS": str(threads)} if processes else None)
    return Client(cluster), cluster


def run_grid(runs: list[RunSpec], out_dir: str | Path, *, jobs: int = 1, dask_local: int = 0,
             scheduler: str | None = None, runner: Runner | None = None, processes: bool = True,
             threads: int | None = None, console: Console | None = None, grid_meta: dict | None = None,
             progress: bool = True) -> GridResult:
    """Execute `runs` (finished ones skipped) and return their outcomes; never stops at a failed run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / GRID_FILE, {**(grid_meta or {}), "runs": [r.record() for r in runs]})
    console = console or Console()
    res, t0, loads = GridResult(), time.perf_counter(), data_loads()
    todo = [r for r in runs if not is_finished(out_dir / "runs" / r.name, r.hash)]
    pending = {r.name for r in todo}
    for r in runs:
        if r.name not in pending:
            metrics = read_json(out_dir / "runs" / r.name / "metrics.json")
            res.outcomes.append(Outcome(r.name, r.hash, "skipped", main_metric(metrics)))
    if res.outcomes:
        console.print(f"[dim]{len(res.outcomes)} of {len(runs)} runs already finished: skipped[/dim]")
    workers = max(1, dask_local or jobs)
    threads = threads or threads_per_worker(workers)
    client = cluster = None
    if scheduler or dask_local:
        client, cluster = _dask_client(dask_local, scheduler, processes, threads)
        stream = _dask_outcomes(todo, out_dir, client, runner, threads if (processes or scheduler) else None)
    elif jobs > 1 and len(todo) > 1:
        jobs = min(jobs, len(todo))
        stream = pool_outcomes(todo, out_dir, jobs, runner, threads, early_fork(todo, jobs, threads), res, console)
    else:
        stream = (run_one(r, out_dir, runner, threads) for r in todo)
    try:
        with progress_bar("runs", console=console, disable=not progress) as bar:
            task = bar.add_task("ablate", total=len(runs), completed=len(runs) - len(todo))
            for o in stream:
                res.outcomes.append(o)
                bar.console.print(_line(o))
                bar.advance(task)
    finally:
        stream.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    res.seconds = time.perf_counter() - t0
    res.data_loads = data_loads() - loads + sum(o.loads for o in res.ran if o.pid not in (None, os.getpid()))
    return res


def _line(o: Outcome) -> str:
    if o.status == "pruned":
        return f"[yellow]pruned[/yellow] {escape(o.name)}  {escape(o.error or '')}  ({o.seconds:.1f} s)"
    if o.status == "failed":
        err = o.error or ""
        return f"[red]FAILED[/red] {escape(o.name)}  {escape(err[:200] + ('...' if len(err) > 200 else ''))}"
    main = "n/a" if o.main is None else f"{o.main:.4f}"
    return f"[green]ok[/green]     {escape(o.name)}  main={main}  ({o.seconds:.1f} s)"
