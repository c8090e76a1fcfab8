"""Extraction spread over Dask workers: videos are partitioned into small tasks, each a `run_extract` on its
videos into the one shared store (leases keep concurrent writers apart, see cache/coord.py).

A local cluster has one worker per GPU, pinned with CUDA_VISIBLE_DEVICES, or N single-threaded CPU workers. A
worker that dies has its task re-run on another (the scheduler reschedules a lost task; extraction resumes, so
videos it completed are skipped). Progress counts videos as tasks finish, cluster-wide.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from affcli.pipeline.extract import ExtractConfig, VideoResult, run_extract
from affcli.pipeline.sources import discover_sources

TASK_RETRIES = 2


def video_ids(cfg: ExtractConfig) -> list[str]:
    """Ids of the sources `cfg` would extract, in order (the same discovery as a single-process run)."""
    if cfg.images_dir is not None:
        return [s.video_id for s in discover_sources(images_dir=cfg.images_dir, videos=cfg.videos)]
    return [s.video_id for s in discover_sources(cfg.video_dir if cfg.frames_dir is None else None,
                                                 cfg.frames_dir, cfg.videos)]


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


def resolve_gpus(spec: str, count: int | None = None) -> list[int]:
    """`--gpus all|0,1` -> the CUDA device indices (as torch numbers them here); one-line ValueError when the list is
    malformed, no CUDA device is visible, or an index does not exist. `count` overrides `gpu_count()` (tests)."""
    text = spec.strip().lower()
    try:
        ids = None if text == "all" else [int(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"extract: --gpus must be 'all' or device indices such as 0,1, not {spec!r}") from None
    if ids is not None and len(set(ids)) != len(ids):
        raise ValueError(f"extract: --gpus {spec}: a device is listed twice")
    n = gpu_count() if count is None else count
    if n == 0:
        raise ValueError(f"extract: --gpus {spec}: no CUDA device is visible on this machine")
    missing = [i for i in ids or [] if not 0 <= i < n]
    if missing:
        raise ValueError(f"extract: --gpus {spec}: no CUDA device {missing[0]} (visible: 0..{n - 1})")
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


@contextmanager
def local_cluster(n: int, gpus: int | list[int] | None = None) -> Iterator[Any]:
    """A Dask client on a local cluster of `worker_envs` workers (nanny processes, one thread each)."""
    from distributed import Client, Nanny, Scheduler, SpecCluster

    envs = worker_envs(n, gpu_count() if gpus is None else gpus)
    workers = {f"extract-{i}": {"cls": Nanny, "options": {"nthreads": 1, "env": env, "memory_limit": 0}}
               for i, env in enumerate(envs)}
    cluster = SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
                          silence_logs=40)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _extract_task(cfg: ExtractConfig, ids: list[str]) -> list[VideoResult]:
    """One task: a resumable single-process extraction of `ids` on this worker."""
    return run_extract(dataclasses.replace(cfg, videos=list(ids)))


def _visible_devices() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def _on_worker(cfg: ExtractConfig, pinned: bool) -> ExtractConfig:
    """The config a worker runs: on a GPU-pinned worker the device is its one visible GPU."""
    if pinned and str(cfg.device).startswith("cuda"):
        return dataclasses.replace(cfg, device="cuda")
    return cfg


def run_on_client(client: Any, cfg: ExtractConfig, progress: Callable[[str, dict], None] | None = None,
                  retries: int = TASK_RETRIES) -> list[VideoResult]:
    """Extract every video of `cfg` with the workers of `client`; returns one result per video, sorted by id."""
    from distributed import as_completed

    progress = progress or (lambda event, info: None)
    ids = video_ids(cfg)
    n_workers = max(1, len(client.scheduler_info()["workers"]))
    visible = client.run(_visible_devices)
    pinned = bool(visible) and all(v and "," not in v for v in visible.values())
    wcfg = _on_worker(cfg, pinned)
    progress("start", {"videos": len(ids), "skipped": 0, "frames": 0})
    futures = [client.submit(_extract_task, wcfg, part, retries=retries, pure=False)
               for part in partition(ids, n_workers)]
    results: dict[str, VideoResult] = {}
    for fut in as_completed(futures):
        for r in fut.result():
            results[r.video_id] = r
            progress("video", {"video": r.video_id, "status": r.status, "message": r.message})
    _final_manifest(cfg)
    return [results[v] for v in sorted(results)]


def _final_manifest(cfg: ExtractConfig) -> None:
    """Rebuild the manifest once every task is done (each task rebuilds its own; this one sees them all)."""
    from affcli.cache.store import FeatureStore

    FeatureStore(cfg.cache, mode="a").write_manifest()


def run_distributed(cfg: ExtractConfig, dask_local: int = 0, scheduler: str | None = None,
                    progress: Callable[[str, dict], None] | None = None,
                    gpus: str | None = None) -> list[VideoResult]:
    """`extract --dask-local N` (a local cluster), `--scheduler tcp://...` (an existing one) or `--gpus all|0,1`
    (a local cluster of one worker per listed GPU)."""
    if gpus is not None:
        if dask_local or scheduler:
            raise ValueError("extract: --gpus starts its own workers; use it without --dask-local / --scheduler")
        if str(cfg.device) == "cpu":
            raise ValueError("extract: --gpus runs on CUDA devices; it cannot be combined with --device cpu")
        ids = resolve_gpus(gpus)
        cfg.validate()
        with local_cluster(len(ids), ids) as client:
            return run_on_client(client, cfg, progress)
    cfg.validate()
    if scheduler:
        from distributed import Client

        with Client(scheduler) as client:
            return run_on_client(client, cfg, progress)
    if dask_local < 1:
        raise ValueError(f"extract: --dask-local needs at least 1 worker, not {dask_local}")
    with local_cluster(dask_local) as client:
        return run_on_client(client, cfg, progress)
