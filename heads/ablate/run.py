"""One run of a grid and what every executor shares: the run's outcome records, the per-process data cache, the
thread and job budget, and the cost order of runs (execute.py runs them in-process or on Dask, pool.py on a local
process pool)."""
from __future__ import annotations

import os
import shutil
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affcli.common.names import safe_name
from affcli.common.runs import read_json, write_json
from affcli.heads.ablate.grid import RunSpec
from affcli.heads.ablate.report import PRUNED_FILE, RUN_FILE, run_status

Runner = Callable[[dict[str, Any], Path], dict[str, Any]]
DATA_CACHE_SIZE = 2
_DATA: OrderedDict[str, Any] = OrderedDict()
_DATA_LOCK = threading.Lock()
_DATA_LOADS = 0
_WORKER_GPU: int | None = None


class WorkerDied(RuntimeError):
    """A pool worker exited abruptly; the runs it held are recorded failed and retried next time."""


class RunPruned(Exception):
    """A search stopped this run early on its validation curve (recorded in pruned.json, not a failure)."""


@dataclass
class Outcome:
    """What happened to one run: ok, failed or skipped (already finished), with its main metric or error; the process
    that ran it and how many data loads the run cost there (0 when its data was already in that process)."""

    name: str
    hash: str
    status: str
    main: float | None = None
    error: str | None = None
    seconds: float = 0.0
    pid: int | None = None
    loads: int = 0


@dataclass
class GridResult:
    """All outcomes of one invocation, its wall time, its data loads in all processes together and, with a pool, how
    its workers started ('fork' or 'spawn') and the seconds from creating the pool to a worker ready to train."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    data_loads: int = 0
    start_method: str = ""
    worker_start_s: float | None = None

    def count(self, status: str) -> int:
        """Number of runs with this status."""
        return sum(o.status == status for o in self.outcomes)

    @property
    def ran(self) -> list[Outcome]:
        """Runs that actually executed in this invocation (ok or failed, not skipped)."""
        return [o for o in self.outcomes if o.status != "skipped"]


# ---- data cache (one per process: a pool worker or a Dask worker) ----------------------------------
def cached_data(cfg_obj: Any, cfg: dict[str, Any], prepare: Callable[[Any], Any]) -> Any:
    """`prepare(cfg_obj)` once per data key (`trainer.data_key`) in this process (the last few kept)."""
    global _DATA_LOADS
    from affcli.heads.train.trainer import data_key

    key = data_key(cfg)
    with _DATA_LOCK:
        if key in _DATA:
            _DATA.move_to_end(key)
            return _DATA[key]
        data = prepare(cfg_obj)
        _DATA_LOADS += 1
        _put(key, data)
        return data


def _put(key: str, data: Any) -> None:
    """Cache `data` under `key`, evicting the oldest beyond DATA_CACHE_SIZE (caller holds _DATA_LOCK)."""
    _DATA[key] = data
    while len(_DATA) > DATA_CACHE_SIZE:
        _DATA.popitem(last=False)


def data_loads() -> int:
    """How many times this process loaded data (for tests and benchmarks)."""
    return _DATA_LOADS


def clear_data_cache() -> None:
    """Drop this process's cached data."""
    with _DATA_LOCK:
        _DATA.clear()


def keep_data(key: str, data: Any) -> None:
    """Keep `data` loaded by another process (a pool's parent, in shared memory) under its data key, unless held."""
    with _DATA_LOCK:
        if key not in _DATA:
            _put(key, data)


def use_gpu(index: int) -> None:
    """Send this worker's CUDA runs to GPU `index` (set once by the pool that started it)."""
    global _WORKER_GPU
    _WORKER_GPU = index


# ---- one run ----------------------------------------------------------------------------------------
def train_with_trainer(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The real runner: `heads.trainer.train_run` on data cached per process."""
    return train_cached(cfg, run_dir)


def train_cached(cfg: dict[str, Any], run_dir: Path, epoch_hook: Callable[[int, float], None] | None = None
                 ) -> dict[str, Any]:
    """Train one grid point (K fold sub-runs when its config has folds) on this process's cached data."""
    from affcli.heads.train.folds import run_training
    from affcli.heads.train.trainer import RunConfig, prepare_data

    cfg = dict(cfg, out=str(run_dir))
    if _WORKER_GPU is not None and str(cfg.get("device", "")).startswith("cuda"):
        cfg["device"] = f"cuda:{_WORKER_GPU}"
    obj = RunConfig.from_dict(cfg)
    return run_training(obj, data=cached_data(obj, cfg, prepare_data), epoch_hook=epoch_hook)


def is_finished(run_dir: Path, want_hash: str) -> bool:
    """A run dir whose metrics.json belongs to a completed run of this exact config."""
    return run_status(run_dir, want_hash) == "ok"


def run_one(spec: RunSpec, out_dir: str | Path, runner: Runner | None = None, threads: int | None = None) -> Outcome:
    """Run one grid point into out_dir/runs/<name>; skip it if finished; record any failure in error.json."""
    loads = _DATA_LOADS
    o = _run_one(spec, out_dir, runner, threads)
    o.pid, o.loads = os.getpid(), _DATA_LOADS - loads
    return o


def _run_one(spec: RunSpec, out_dir: str | Path, runner: Runner | None, threads: int | None) -> Outcome:
    run_dir = Path(out_dir) / "runs" / safe_name(spec.name, "run name")
    if is_finished(run_dir, spec.hash):
        return Outcome(spec.name, spec.hash, "skipped", main_metric(read_json(run_dir / "metrics.json")))
    if threads:
        import torch

        torch.set_num_threads(threads)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    meta = {**spec.record(), "config": spec.config, "finished": False}
    write_json(run_dir / RUN_FILE, meta)
    t0 = time.perf_counter()
    try:
        metrics = (runner or train_with_trainer)(spec.config, run_dir)
        if not (run_dir / "metrics.json").exists():
            write_json(run_dir / "metrics.json", metrics)
        dt = time.perf_counter() - t0
        write_json(run_dir / RUN_FILE, {**meta, "finished": True, "seconds": dt})
        return Outcome(spec.name, spec.hash, "ok", main_metric(read_json(run_dir / "metrics.json")), seconds=dt)
    except RunPruned as e:
        dt = time.perf_counter() - t0
        write_json(run_dir / PRUNED_FILE, {"message": str(e), "hash": spec.hash, "name": spec.name, "seconds": dt})
        return Outcome(spec.name, spec.hash, "pruned", error=str(e), seconds=dt)
    except Exception as e:  # one run's failure (NaN loss, OOM, bug) must not stop the grid
        _free_gpu()
        return record_failure(spec, run_dir, e, time.perf_counter() - t0)


def record_failure(spec: RunSpec, run_dir: Path, e: BaseException, seconds: float = 0.0) -> Outcome:
    """Write error.json (type, message, traceback) so the next invocation retries the run."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / RUN_FILE).exists():
        write_json(run_dir / RUN_FILE, {**spec.record(), "config": spec.config, "finished": False})
    for stale in ("metrics.json",):
        (run_dir / stale).unlink(missing_ok=True)
    write_json(run_dir / "error.json", {"type": type(e).__name__, "message": str(e), "traceback": tb,
                                        "hash": spec.hash, "name": spec.name, "seconds": seconds})
    msg = (str(e).strip().splitlines() or [""])[0]
    return Outcome(spec.name, spec.hash, "failed", error=f"{type(e).__name__}: {msg}", seconds=seconds)


def main_metric(metrics: dict[str, Any]) -> float | None:
    v = metrics.get("main")
    return float(v) if isinstance(v, (int, float)) else None


def _free_gpu() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


# ---- sizing -----------------------------------------------------------------------------------------
def cpu_count() -> int:
    """Cores this process may use (its thread budget: `affcli --threads`, affinity, cgroup quota, OMP_NUM_THREADS)."""
    from affcli.common.threads import thread_budget

    return thread_budget()


def threads_per_worker(jobs: int) -> int:
    """Torch intra-op threads per worker so that jobs x threads fits the cores."""
    return max(1, cpu_count() // max(1, jobs))


def auto_jobs(device: str, bytes_per_run: int, overhead: int = 768 << 20) -> int:
    """Workers that fit: on CUDA, free memory over (data + model + CUDA context) per worker; on CPU, the cores."""
    cores = cpu_count()
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            free = sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
            return max(1, min(cores, int(0.8 * free) // max(1, bytes_per_run + overhead)))
        return 1
    return cores


# ---- scheduling -------------------------------------------------------------------------------------
def parent_shares_work(todo: list[RunSpec]) -> bool:
    """On CPU grids this (already warm) process runs grid points itself beside jobs - 1 workers, so no core idles
    while the workers import torch and load their data; CUDA grids keep every run in a worker."""
    return not any(str(r.config.get("device", "cpu")).startswith(("cuda", "auto")) for r in todo)


def preload(todo: list[RunSpec], runner: Runner | None) -> dict[str, Any]:
    """Load each distinct data key of the grid once in this process (the last DATA_CACHE_SIZE kept) for the runs it
    takes itself and for costing; {data key: Data}. A grid whose data fails to load is left to its runs' errors."""
    if runner is not None and not getattr(runner, "uses_trainer", False):
        return {}
    from affcli.heads.train.trainer import RunConfig, data_key, prepare_data

    out: dict[str, Any] = {}
    for r in todo:
        key = data_key(r.config)
        if key in out or len(out) >= DATA_CACHE_SIZE:
            continue
        try:
            out[key] = cached_data(RunConfig.from_dict(r.config), r.config, prepare_data)
        except Exception:  # reported by the run itself, with its run folder
            return out
    return out


def expected_cost(spec: RunSpec, data: dict[str, Any]) -> float:
    """Relative cost of a run: epochs x the model's parameter count where its data is loaded, else epochs."""
    epochs = float(spec.config.get("epochs") or 1)
    from affcli.heads.train.trainer import RunConfig, build_model, data_key

    d = data.get(data_key(spec.config))
    if d is None:
        return epochs
    try:
        return epochs * sum(p.numel() for p in build_model(RunConfig.from_dict(spec.config), d).parameters())
    except Exception:  # a config that fails to build fails in its run; schedule it first to report early
        return float("inf")


def pack_by_cost(todo: list[RunSpec], data: dict[str, Any]) -> list[RunSpec]:
    """Longest expected runs first (LPT), so no worker is left with a long run at the end of the grid."""
    cost = {r.name: expected_cost(r, data) for r in todo}
    return sorted(todo, key=lambda r: -cost[r.name])
