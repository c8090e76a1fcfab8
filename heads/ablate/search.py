"""`affcli ablate GRID --search optuna --trials N`: the grid's axes as an Optuna search space (lists categorical,
`{log|int|float = [lo, hi]}` ranges numeric; seeds are not searched: every trial runs each seed of the grid),
sampled by Optuna's default TPE sampler. The study lives in DIR/search.db (SQLite), so a killed search resumes: trials
that were running when it died are retried. Trials are pruned on validation per epoch (median rule) from inside the
trainer. Each trial's runs are ordinary grid runs (the same executors: in-process, pool, Dask) in DIR/runs/, so the
result is the same tables, plus the optimisation history and parameter importances as PNGs.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from affcli.common.runs import config_hash, write_json
from affcli.heads.ablate.grid import SEED_AXIS, Grid, GridError, RunSpec, display
from affcli.heads.ablate.report import GRID_FILE
from affcli.heads.ablate.run import RunPruned, train_cached
from affcli.heads.ablate.validate import build_runs

STUDY = "affcli-search"
DB_FILE = "search.db"
TRIALS_CSV = "search_trials.csv"
HISTORY_PNG = "search_history.png"
IMPORTANCE_PNG = "search_importance.png"
TRIAL_AXIS = "trial"
KILLED = "killed"


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def space_of(grid: Grid) -> dict[str, Any]:
    """{axis: list of shown values (categorical) | range spec}: the searched axes, seeds excluded."""
    space: dict[str, Any] = {a: [display(v) for v in vals] for a, vals in grid.axes.items() if a != SEED_AXIS}
    space.update(grid.ranges)
    rank = {a: i for i, a in enumerate(grid.order)}
    return dict(sorted(space.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def check_search_grid(grid: Grid, cache: str | Path | None, labels: str | Path | None,
                      overrides: dict[str, Any] | None) -> None:
    """Refuse what a search cannot take, then validate every categorical value and each range's bounds as a grid
    would (a probe grid of the bounds), so a bad space is refused before any trial."""
    if grid.exclude or grid.include:
        raise GridError("exclude" if grid.exclude else "include", "exclude/include rules are for grids; a search "
                                                                  "samples the axes (drop the rules)")
    if not space_of(grid):
        raise GridError("axes", "nothing to search: give at least one axis besides seeds")
    first = {a: vals[:1] for a, vals in grid.axes.items() if a != SEED_AXIS}
    first.update({a: [r["low"]] for a, r in grid.ranges.items()})
    values = [(a, v) for a, vals in grid.axes.items() if a != SEED_AXIS for v in vals]
    values += [(a, b) for a, r in grid.ranges.items() for b in (r["low"], r["high"])]
    for a, v in values:
        build_runs(Grid(grid.base, {**first, a: [v]}, source=grid.source), cache, labels, overrides)


def suggest(trial: Any, grid: Grid) -> dict[str, Any]:
    """{axis: value} of one trial (categorical values as written in the grid)."""
    params: dict[str, Any] = {}
    for a, vals in grid.axes.items():
        if a == SEED_AXIS:
            continue
        shown = [display(v) for v in vals]
        params[a] = vals[shown.index(trial.suggest_categorical(a, shown))]
    for a, r in grid.ranges.items():
        if r["kind"] == "int":
            params[a] = trial.suggest_int(a, r["low"], r["high"], step=r["step"] or 1)
        else:
            v = trial.suggest_float(a, float(r["low"]), float(r["high"]), log=r["kind"] == "log", step=r["step"])
            params[a] = v if r["step"] else float(f"{v:.4g}")
    return params


def trial_runs(grid: Grid, number: int, params: dict[str, Any], cache: Any, labels: Any,
               overrides: dict[str, Any] | None) -> list[RunSpec]:
    """The grid runs of one trial (one per seed of the grid), named `t<number>__<axis values>__seed<s>`, with the
    trial as the first axis of the tables."""
    seeds = grid.axes.get(SEED_AXIS, [])
    axes = {a: [v] for a, v in params.items()}
    if seeds:
        axes[SEED_AXIS] = seeds
    runs = build_runs(Grid(grid.base, axes, source=grid.source), cache, labels, overrides)
    for r in runs:
        r.name = f"t{number:04d}__{r.name}"
        r.axes = {TRIAL_AXIS: f"{number:04d}", **{a: r.axes.get(a, "(base)") for a in space_of(grid)},
                  **({SEED_AXIS: r.axes[SEED_AXIS]} if SEED_AXIS in r.axes else {})}
    return runs


@dataclass
class SearchRunner:
    """The runner of a search's grid runs (picklable, for pool and Dask workers): trains the run on the process's
    cached data and reports each epoch's validation score to its Optuna trial, raising RunPruned when the pruner
    says so."""

    storage: str
    trial_of: dict[str, tuple[int, int]]
    uses_trainer: bool = True

    def __call__(self, cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        optuna = _optuna()
        trial_id, offset = self.trial_of[Path(run_dir).name]
        study = optuna.load_study(study_name=STUDY, storage=self.storage)
        trial = optuna.trial.Trial(study, trial_id)

        def hook(step: int, value: float) -> None:
            if value == value:
                trial.report(value, offset + step)
            if trial.should_prune():
                raise RunPruned(f"pruned after step {offset + step} (val main {value:.4f})")

        return train_cached(cfg, Path(run_dir), epoch_hook=hook)


def _counted(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and not t.user_attrs.get(KILLED))]


def resume(study: Any, out: Path, console: Console) -> int:
    """Trials left RUNNING by a killed search: marked failed (killed), their run folders removed and their parameters
    queued again; returns how many."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    storage = study._storage
    for t in stale:
        storage.set_trial_user_attr(t._trial_id, KILLED, True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        for d in (out / "runs").glob(f"t{t.number:04d}__*"):
            shutil.rmtree(d, ignore_errors=True)
        if t.params:
            study.enqueue_trial(t.params, skip_if_exists=False)
    if stale:
        console.print(f"[dim]search: {len(stale)} trial(s) interrupted by the last invocation: run again[/dim]")
    return len(stale)


def _n_seeds(grid: Grid) -> int:
    return max(1, len(grid.axes.get(SEED_AXIS, [])))


def run_search(grid: Grid, out: Path, trials: int, cache: Any, labels: Any, overrides: dict[str, Any] | None,
               console: Console, **run_kw: Any) -> dict[str, Any]:
    """Run (or resume) a search until `trials` trials are finished or pruned; write grid.json, the tables' runs, the
    trials CSV and the two plots. Returns {'trials', 'ran', 'best'}."""
    from affcli.heads.ablate.execute import run_grid

    optuna = _optuna()
    if trials < 1:
        raise GridError("--trials", f"must be >= 1, not {trials}")
    check_search_grid(grid, cache, labels, overrides)
    out.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(out / DB_FILE).resolve()}"
    space = space_of(grid)
    fingerprint = config_hash({"space": space, "seeds": grid.axes.get(SEED_AXIS, []), "base": grid.base})
    probe = optuna.load_study(study_name=STUDY, storage=storage) if (out / DB_FILE).exists() else None
    if probe is not None and probe.user_attrs.get("space") not in (None, fingerprint):
        raise GridError("--out", f"{out} holds a search over another space or base; use a new --out")
    n_before = len(probe.trials) if probe is not None else 0
    seed = int(grid.base.get("seed", 0) or 0) + n_before
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=optuna.pruners.MedianPruner())
    study.set_user_attr("space", fingerprint)
    resume(study, out, console)
    workers = max(1, run_kw.get("dask_local") or run_kw.get("jobs") or 1)
    epochs = int(grid.base.get("epochs", 20)) * max(1, int(grid.base.get("folds", 0) or 0))
    ran = 0
    t0 = time.perf_counter()
    while len(_counted(study)) < trials:
        batch = [study.ask() for _ in range(min(workers, trials - len(_counted(study))))]
        specs: dict[int, list[RunSpec]] = {}
        trial_of: dict[str, tuple[int, int]] = {}
        for t in batch:
            try:
                specs[t.number] = trial_runs(grid, t.number, suggest(t, grid), cache, labels, overrides)
            except GridError as e:  # a sampled config the grid refuses (e.g. an axis value that changes nothing)
                study.tell(t, state=optuna.trial.TrialState.FAIL)
                console.print(f"[red]trial {t.number} refused[/red]: {e}", highlight=False)
                continue
            for i, r in enumerate(specs[t.number]):
                trial_of[r.name] = (t._trial_id, i * (epochs + 1))
        _write_grid_json(out, grid, study)
        flat = [r for rs in specs.values() for r in rs]
        res = run_grid(flat, out, runner=SearchRunner(storage, trial_of), console=console,
                       grid_meta=search_meta(grid), progress=False, **run_kw) if flat else None
        by_name = {o.name: o for o in (res.outcomes if res else [])}
        for t in batch:
            if t.number not in specs:
                continue
            outs = [by_name.get(r.name) for r in specs[t.number]]
            states = {o.status if o else "failed" for o in outs}
            if "failed" in states:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            elif "pruned" in states:
                study.tell(t, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(t, sum(o.main for o in outs) / len(outs))
            ran += 1
        _write_grid_json(out, grid, study)
    _write_grid_json(out, grid, study)
    write_outputs(study, out, console)
    best = study.best_trial if any(t.state.name == "COMPLETE" for t in study.trials) else None
    return {"trials": len(_counted(study)), "ran": ran, "seconds": time.perf_counter() - t0,
            "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params}}


def _write_grid_json(out: Path, grid: Grid, study: Any) -> None:
    """grid.json of a search: the trial axis, the searched axes and seeds, and every run of every trial that is not a
    killed one (so `ablate report DIR` rebuilds the tables)."""
    from affcli.common.runs import read_json
    from affcli.heads.ablate.report import RUN_FILE

    runs = []
    for d in sorted((out / "runs").glob("t[0-9][0-9][0-9][0-9]__*")) if (out / "runs").is_dir() else []:
        if (d / RUN_FILE).is_file():
            m = read_json(d / RUN_FILE)
            runs.append({k: m[k] for k in ("name", "hash", "axes", "task")})
    write_json(out / GRID_FILE, {**search_meta(grid), "trials": len(_counted(study)), "runs": runs})


def search_meta(grid: Grid) -> dict[str, Any]:
    """What grid.json records about a search: the trial axis first, the searched axes, seeds last."""
    axes = [TRIAL_AXIS, *space_of(grid), *([SEED_AXIS] if SEED_AXIS in grid.axes else [])]
    return {"axes": axes, "source": grid.source, "base": grid.base, "search": "optuna"}


def write_outputs(study: Any, out: Path, console: Console) -> list[Path]:
    """search_trials.csv (number, state, value, parameters), the optimisation history and the parameter importance
    PNGs (importance needs two finished trials that differ; a line says when it cannot be drawn)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import polars as pl
    from optuna.visualization import matplotlib as ovm

    rows = [{"trial": t.number, "state": t.state.name, "value": t.value,
             "killed": bool(t.user_attrs.get(KILLED)), **{f"param_{k}": str(v) for k, v in t.params.items()}}
            for t in study.get_trials(deepcopy=False)]
    pl.DataFrame(rows, infer_schema_length=None).write_csv(out / TRIALS_CSV)
    written = [out / TRIALS_CSV]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, draw in ((HISTORY_PNG, ovm.plot_optimization_history), (IMPORTANCE_PNG, ovm.plot_param_importances)):
            try:
                ax = draw(study)
                fig = ax.figure if hasattr(ax, "figure") else ax
                fig.set_size_inches(7, 4.5)
                fig.tight_layout()
                fig.savefig(out / name, dpi=110)
                plt.close(fig)
                written.append(out / name)
            except (ValueError, RuntimeError, ZeroDivisionError) as e:
                console.print(f"[dim]search: {name} not drawn ({' '.join(str(e).split())[:160]})[/dim]")
                plt.close("all")
    return written
