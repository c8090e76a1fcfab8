"""The local process pool of `ablate --jobs N`: workers forked warm (or spawned), fed one run at a time from a shared
queue, the grid's data handed over in shared memory; a dead worker fails only its run."""
from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from rich.console import Console
from rich.markup import escape

from affcli.common.lifetime import die_with_parent
from affcli.heads.ablate.run import (GridResult, Outcome, Runner, WorkerDied, keep_data, pack_by_cost,
                                     parent_shares_work, preload, record_failure, run_one, use_gpu)
from affcli.heads.ablate.grid import RunSpec

FORK_PROBE_S = 60.0


def _init_worker(threads: int, counter: Any, n_gpus: int) -> None:
    die_with_parent()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    if n_gpus > 1:
        with counter.get_lock():
            use_gpu(counter.value % n_gpus)
            counter.value += 1


def warm_imports() -> None:
    """Import what a run needs (torch, torch._dynamo through a first optimizer, matplotlib, polars, zarr, the trainer)
    running no polars query, no zarr read and no multi-threaded op, so that a fork inherits them safely."""
    import polars  # noqa: F401
    import torch
    import zarr  # noqa: F401

    from affcli.heads.data import loading
    from affcli.heads.train import plots, trainer  # noqa: F401

    plots._plt()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    torch.set_num_threads(threads)


def _ready(threads: int) -> int:
    """A new worker's first task: what a run needs before it trains (see warm_imports; nothing left to do in a warm
    fork), then a multi-threaded torch op, a polars query and a zarr read, which never return in a forked child whose
    parent left a thread pool they wait on. Returns the pid."""
    import polars as pl
    import torch
    import zarr

    warm_imports()
    torch.set_num_threads(threads)
    torch.ones(1 << 17).mul_(2).sum()
    pl.DataFrame({"a": [1, 2]}).lazy().select(pl.col("a").sum()).collect()
    zarr.zeros((2,), store=zarr.storage.MemoryStore())[:]
    return os.getpid()


def fork_refusal() -> str | None:
    """Why this process may not fork workers now (None: it may): no fork here, or polars' thread pool already runs (a
    forked child would wait on its threads for ever; zarr resets its IO loop after a fork itself)."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        return "this platform has no fork"
    try:
        names = {(d / "comm").read_text().strip() for d in Path("/proc/self/task").iterdir()}
    except OSError:
        return "cannot list this process's threads (/proc)"
    busy = sorted(n for n in names if re.fullmatch(r"polars-\d+|tokio-.*", n))
    return f"polars' thread pool already runs in this process ({', '.join(busy)})" if busy else None


@dataclass
class PoolStart:
    """A pool with its workers started ('fork' or 'spawn'), each's first task `_ready` in flight since t0, and the
    seconds until the first of them was done."""

    pool: ProcessPoolExecutor
    method: str
    ready: list[Future]
    t0: float
    ready_s: float | None = None

    def _done(self, fut: Future) -> None:
        if self.ready_s is None and not fut.exception():
            self.ready_s = time.perf_counter() - self.t0

    def check(self, timeout: float) -> str | None:
        """None once the workers answered their first task within `timeout` s of the start, else why not."""
        done, late = wait(self.ready, max(0.0, self.t0 + timeout - time.perf_counter()))
        if late:
            return f"a {self.method}ed worker did not answer its first task within {timeout:.0f} s"
        bad = next((f.exception() for f in done if f.exception()), None)
        return f"a {self.method}ed worker failed its first task ({type(bad).__name__}: {bad})" if bad else None

    def abandon(self) -> None:
        """Kill the workers (a hung one included) and drop the pool."""
        for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
            proc.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)


def start_pool(workers: int, threads: int, n_gpus: int, method: str) -> PoolStart:
    """`workers` processes started with `method` ('fork': now, from this process; 'spawn': fresh interpreters) and
    each handed `_ready` first; a fork context starts all its workers at the first submit."""
    import multiprocessing as mp

    import torch.multiprocessing  # noqa: F401  registers the tensor reducers that carry shared data to workers

    ctx = mp.get_context(method)
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(threads, ctx.Value("i", 0), n_gpus))
    start = PoolStart(pool, method, [pool.submit(_ready, threads) for _ in range(workers)], t0)
    for f in start.ready:
        f.add_done_callback(start._done)
    return start


def early_fork(todo: list[RunSpec], jobs: int, threads: int) -> tuple[PoolStart | None, str]:
    """On a CPU grid, workers forked now, warm, before this process starts any thread pool (progress bar, polars,
    OpenMP) or loads data; else (None, why not: '' on a GPU grid), and the pool is spawned later."""
    if not parent_shares_work(todo):
        return None, ""
    why = fork_refusal()
    if why is None:
        try:
            warm_imports()
            return start_pool(_pool_size(todo, jobs), threads, 0, "fork"), ""
        except Exception as e:  # the spawned pool is the fallback
            why = f"fork failed ({type(e).__name__}: {e})"
    return None, why


def shareable(data: dict[str, Any], shm: str = "/dev/shm") -> dict[str, Any]:
    """The loaded CPU data that workers may map instead of loading again: all of it where its tensors fit in half the
    free shared memory (a full /dev/shm would kill this process with SIGBUS), else none (each worker loads its own)."""
    import torch

    tensors = [t for d in data.values() for v in getattr(d, "__dict__", {}).values() if isinstance(v, dict)
               for t in v.values() if isinstance(t, torch.Tensor)]
    if not data or any(t.device.type != "cpu" for t in tensors):
        return {}
    try:
        st = os.statvfs(shm)
    except OSError:
        return {}
    need = sum(t.untyped_storage().nbytes() for t in tensors if not t.is_shared())
    return data if need <= st.f_bavail * st.f_frsize // 2 else {}


def _pool_size(todo: list[RunSpec], jobs: int) -> int:
    return max(1, jobs - 1) if parent_shares_work(todo) else jobs


def _pool_run(spec: RunSpec, shared: tuple[str, Any] | None, out_dir: str, runner: Runner | None,
              threads: int) -> Outcome:
    """run_one in a worker, the grid's loaded data (key, Data in shared memory) kept from the first task that brings it."""
    if shared is not None:
        keep_data(*shared)
    return run_one(spec, out_dir, runner, threads)


class _Feeder:
    """One queue of runs shared by a pool and this process: a worker gets its next run the moment it returns one
    (from the pool's result thread), this process takes one between its own runs, so neither idles while runs wait."""

    def __init__(self, queue: deque[RunSpec], pool: ProcessPoolExecutor, args: tuple, shared: dict[str, Any]) -> None:
        self.queue, self.pool, self.args, self.shared = queue, pool, args, shared
        self.done: SimpleQueue[tuple[Future, RunSpec]] = SimpleQueue()
        self.in_flight, self.broken = 0, False
        self.lock = threading.Lock()

    def take(self) -> RunSpec | None:
        """The next (longest) run, or None when all are handed out."""
        with self.lock:
            return self.queue.popleft() if self.queue else None

    def idle(self) -> bool:
        """No run left to hand out and none in a worker."""
        with self.lock:
            return not self.queue and not self.in_flight

    def submit(self) -> None:
        """Hand the next run to the pool (put back when the pool is broken)."""
        with self.lock:  # taken and counted at once: idle() never sees a run that is in neither place
            if not self.queue:
                return
            spec = self.queue.popleft()
            self.in_flight += 1
        try:
            fut = self.pool.submit(_pool_run, spec, self._data_of(spec), *self.args)
        except (BrokenProcessPool, RuntimeError):
            self.broken = True
            with self.lock:
                self.in_flight -= 1
                self.queue.appendleft(spec)
            return
        fut.add_done_callback(lambda f: self._returned(f, spec))

    def _data_of(self, spec: RunSpec) -> tuple[str, Any] | None:
        if not self.shared:
            return None
        from affcli.heads.train.trainer import data_key

        key = data_key(spec.config)
        return (key, self.shared[key]) if key in self.shared else None

    def _returned(self, fut: Future, spec: RunSpec) -> None:
        self.broken = self.broken or fut.cancelled() or isinstance(fut.exception(), BrokenProcessPool)
        self.done.put((fut, spec))
        if not self.broken:
            self.submit()

    def outcome(self, fut: Future, spec: RunSpec, out_dir: Path) -> Outcome:
        """The run's outcome; a dead worker or a transfer error is recorded as the run's failure."""
        with self.lock:
            self.in_flight -= 1
        try:
            return fut.result()
        except BrokenProcessPool:
            return record_failure(spec, out_dir / "runs" / spec.name, WorkerDied(
                "a worker process died while this run was in flight (crash or out of host memory)"))
        except Exception as e:
            return record_failure(spec, out_dir / "runs" / spec.name, e)


def pool_outcomes(todo: list[RunSpec], out_dir: Path, jobs: int, runner: Runner | None, threads: int,
                  forked: tuple[PoolStart | None, str], res: GridResult, console: Console) -> Iterator[Outcome]:
    """Outcomes of `todo` over worker processes. On CPU the workers were forked warm (`early_fork`) before this process
    loaded the data once; it hands them that data in shared memory with their runs and runs grid points itself from
    the same queue. CUDA grids, and CPU grids where fork was unsafe, spawn their workers; a pool broken by a dead
    worker is replaced by a spawned one."""
    import torch

    shares = parent_shares_work(todo)
    n_gpus = torch.cuda.device_count() if not shares and torch.cuda.is_available() else 0
    workers = _pool_size(todo, jobs)
    parent_threads = torch.get_num_threads()
    start, why = forked
    first, feeder, args = None, None, (str(out_dir), runner, threads)
    try:
        data = preload(todo, runner) if shares else {}
        queue = deque(pack_by_cost(todo, data))
        shared = shareable(data)
        if start is not None and (why := start.check(FORK_PROBE_S) or ""):
            start.abandon()
            start = None
        if why:
            console.print(f"[dim]ablate: workers spawned, not forked: {escape(why)}[/dim]")
        while feeder is None or not feeder.idle():
            if feeder is None or (feeder.broken and not feeder.in_flight and queue):
                if feeder is not None:  # the last pool broke (a worker died): the rest goes to a fresh one
                    feeder.pool.shutdown(wait=True)
                start = start or start_pool(workers, threads, n_gpus, "spawn")
                first = first or start
                feeder, start = _Feeder(queue, start.pool, args, shared), None
                for _ in range(workers):
                    feeder.submit()
            while not feeder.done.empty():
                yield feeder.outcome(*feeder.done.get(), out_dir)
            spec = feeder.take() if shares else None
            if spec is not None:
                yield run_one(spec, out_dir, runner, threads)
            elif feeder.in_flight:
                yield feeder.outcome(*feeder.done.get(), out_dir)
    finally:
        if feeder is not None:
            feeder.pool.shutdown(wait=True, cancel_futures=True)
        elif start is not None:
            start.abandon()
        torch.set_num_threads(parent_threads)
        if first is not None:
            res.start_method, res.worker_start_s = first.method, first.ready_s
