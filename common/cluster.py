"""The Dask engine shared by `extract`, `predict` and `cache teacher`: which cluster the options name, videos split
into small tasks, results merged as tasks finish, the device a pinned worker uses, per-worker memos.

A local cluster has one worker per GPU, pinned with CUDA_VISIBLE_DEVICES, or N single-threaded CPU workers. A
worker that dies has its task re-run on another (the scheduler reschedules a lost task). Each command's task is a
plain function of its share of the videos, so a re-run task gives the same result.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from affcli.common.cli_options import option

TASK_RETRIES = 2
MEMO_SIZE = 4
Progress = Callable[[str, dict], None]


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """`--dask-local N`, `--scheduler tcp://...` or `--gpus all|0,1`; false when none is given (one process)."""

    dask_local: int = option(0, help="Spread the videos over a local Dask cluster of N workers (one per GPU, pinned "
                                     "to it, when GPUs exist).")
    scheduler: str | None = option(None, help="Spread the videos over a Dask cluster: tcp://host:port.")
    gpus: str | None = option(None, help="One worker per GPU of this machine: all, or device indices such as 0,1.")

    def __bool__(self) -> bool:
        return bool(self.dask_local or self.scheduler or self.gpus is not None)


def partition(ids: list[str], n_workers: int, per_worker: int = 4) -> list[list[str]]:
    """Split ids into about `per_worker` tasks per worker (small tasks balance load and bound a lost task's rework)."""
    if not ids:
        return []
    n = min(len(ids), max(1, n_workers * per_worker))
    return [ids[i::n] for i in range(n)]


def gpu_count() -> int:
    """CUDA devices this process can see (0 without torch.cuda)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_gpus(spec: str, count: int | None = None, command: str = "extract") -> list[int]:
    """`--gpus all|0,1` -> the CUDA device indices (as torch numbers them here); one-line ValueError when the list is
    malformed, no CUDA device is visible, or an index does not exist. `count` overrides `gpu_count()` (tests)."""
    text = spec.strip().lower()
    try:
        ids = None if text == "all" else [int(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"{command}: --gpus must be 'all' or device indices such as 0,1, not {spec!r}") from None
    if ids is not None and len(set(ids)) != len(ids):
        raise ValueError(f"{command}: --gpus {spec}: a device is listed twice")
    n = gpu_count() if count is None else count
    if n == 0:
        raise ValueError(f"{command}: --gpus {spec}: no CUDA device is visible on this machine")
    missing = [i for i in ids or [] if not 0 <= i < n]
    if missing:
        raise ValueError(f"{command}: --gpus {spec}: no CUDA device {missing[0]} (visible: 0..{n - 1})")
    return list(range(n)) if ids is None else ids


def _physical(i: int) -> str:
    """CUDA_VISIBLE_DEVICES entry of torch's device `i` in this process (its own CUDA_VISIBLE_DEVICES remaps)."""
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[i].strip() if i < len(visible) else str(i)


def worker_envs(n: int, gpus: int | list[int]) -> list[dict[str, str]]:
    """Environment of each local worker: one per GPU (all `gpus` of them, or the listed ones) pinned to it, else N
    CPU workers sharing the cores."""
    if gpus:
        ids = range(gpus) if isinstance(gpus, int) else gpus
        return [{"CUDA_VISIBLE_DEVICES": _physical(i), "OMP_NUM_THREADS": "1"} for i in ids]
    threads = str(max(1, (os.cpu_count() or 1) // max(1, n)))
    return [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            for _ in range(max(1, n))]


@contextlib.contextmanager
def local_cluster(n: int, gpus: int | list[int] | None = None, name: str = "extract") -> Iterator[Any]:
    """A Dask client on a local cluster of `worker_envs` workers (nanny processes, one thread each)."""
    from distributed import Client, Nanny, Scheduler, SpecCluster

    envs = worker_envs(n, gpu_count() if gpus is None else gpus)
    workers = {f"{name}-{i}": {"cls": Nanny, "options": {"nthreads": 1, "env": env, "memory_limit": 0}}
               for i, env in enumerate(envs)}
    cluster = SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
                          silence_logs=40)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def _remote(scheduler: str) -> Iterator[Any]:
    from distributed import Client

    with Client(scheduler) as client:
        yield client


def cluster_client(opts: ClusterOptions, command: str, device: str | None = None,
                   check: Callable[[], None] | None = None) -> contextlib.AbstractContextManager:
    """The client the options name (a local cluster, one per GPU, or an existing scheduler). The options are checked
    first (one-line ValueError naming `command`), then `check` (the command's own input checks), then the cluster
    starts on entering."""
    if opts.gpus is not None:
        if opts.dask_local or opts.scheduler:
            raise ValueError(f"{command}: --gpus starts its own workers; use it without --dask-local / --scheduler")
        if str(device) == "cpu":
            raise ValueError(f"{command}: --gpus runs on CUDA devices; it cannot be combined with --device cpu")
        ids = resolve_gpus(opts.gpus, command=command)
        (check or (lambda: None))()
        return local_cluster(len(ids), ids, name=command.replace(" ", "-"))
    if not opts.scheduler and opts.dask_local < 1:
        raise ValueError(f"{command}: --dask-local needs at least 1 worker, not {opts.dask_local}")
    (check or (lambda: None))()
    if opts.scheduler:
        return _remote(opts.scheduler)
    return local_cluster(opts.dask_local, name=command.replace(" ", "-"))


def _visible_devices() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def worker_device(client: Any, device: Any) -> Any:
    """The device a task names on the client's workers: on workers pinned to one GPU each, a CUDA device is that
    worker's one visible GPU ('cuda'); anything else is passed through."""
    visible = client.run(_visible_devices)
    pinned = bool(visible) and all(v and "," not in v for v in visible.values())
    return "cuda" if pinned and str(device).startswith("cuda") else device


def n_workers(client: Any) -> int:
    """Workers the scheduler knows now (at least 1)."""
    return max(1, len(client.scheduler_info()["workers"]))


def map_shares(client: Any, fn: Callable[..., Any], args: tuple, ids: list[str], retries: int = TASK_RETRIES,
               **kwargs: Any) -> Iterator[tuple[list[str], Any]]:
    """`fn(*args, share, **kwargs)` over a partition of `ids`, yielded as (share, result) as tasks finish (a task lost
    with its worker is rescheduled; each share is yielded once)."""
    from distributed import as_completed

    shares = partition(ids, n_workers(client))
    futures = {client.submit(fn, *args, share, retries=retries, pure=False, **kwargs): i
               for i, share in enumerate(shares)}
    for fut in as_completed(list(futures)):
        yield shares[futures[fut]], fut.result()


def map_videos(opts: ClusterOptions, command: str, fn: Callable[..., dict[str, Any]], args: tuple, ids: list[str],
               device: Any = None, progress: Progress | None = None,
               check: Callable[[], None] | None = None) -> dict[str, Any]:
    """{video: value} of `fn(*args, share, device=...)` (a function returning {video: value} for its share) over the
    cluster the options name, merged: a video outside its share, or returned by two shares, is an error; one
    `video` progress event per video as its task finishes."""
    progress = progress or (lambda event, info: None)
    with cluster_client(opts, command, device, check) as client:
        wdev = worker_device(client, device)
        progress("start", {"videos": len(ids)})
        merged: dict[str, Any] = {}
        for share, result in map_shares(client, fn, args, ids, device=wdev):
            stray = set(result) - set(share)
            twice = set(result) & set(merged)
            if stray or twice:
                v = sorted(stray or twice)[0]
                raise RuntimeError(f"{command}: video {v!r} came back {'outside its task' if stray else 'twice'}")
            merged.update(result)
            for v in share:
                progress("video", {"video": v, "status": "ok" if v in result else "skipped"})
    return merged


_memo_lock = threading.Lock()


def worker_memo(key: Any, build: Callable[[], Any], size: int = MEMO_SIZE) -> Any:
    """`build()` once per Dask worker process for `key` (the last `size` keys kept), e.g. a model that every task of
    a command uses; outside a worker, `build()` every call. Counts builds in `memo_builds()`."""
    worker = _current_worker()
    if worker is None:
        return build()
    with _memo_lock:
        memo = worker.__dict__.setdefault("_affcli_memo", OrderedDict())
        if key in memo:
            memo.move_to_end(key)
            return memo[key]
        value = memo[key] = build()
        builds = worker.__dict__.setdefault("_affcli_memo_builds", {})
        builds[key] = builds.get(key, 0) + 1
        while len(memo) > size:
            memo.popitem(last=False)
        return value


def memo_builds(dask_worker: Any = None) -> dict[Any, int]:
    """{key: times built} of `worker_memo` on this worker (`client.run(memo_builds)` passes the worker); empty
    outside a worker."""
    worker = dask_worker or _current_worker()
    return dict(worker.__dict__.get("_affcli_memo_builds", {})) if worker is not None else {}


def _current_worker() -> Any:
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:
        return None
