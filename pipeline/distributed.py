"""Extraction spread over Dask workers: videos are partitioned into small tasks, each a `run_extract` on its
videos into the one shared store (leases keep concurrent writers apart, see cache/coord.py).

The engine (which cluster the options name, partitioning, pinning, merging) is common/cluster.py, shared with
`predict` and `cache teacher`. A task lost with a dead worker is re-run on another; extraction resumes, so videos it
completed are skipped. Progress counts videos as tasks finish, cluster-wide. `run_extraction` is extract's one
choice between this process and a cluster.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from affcli.common.cluster import TASK_RETRIES, ClusterOptions, cluster_client, map_shares, worker_device
from affcli.pipeline.config import ExtractConfig, VideoResult, refused_results
from affcli.pipeline.extract import run_extract
from affcli.pipeline.sources import Refused


def video_ids(cfg: ExtractConfig, refused: list[Refused] | None = None) -> list[str]:
    """Ids of the sources `cfg` would extract, in order (the same discovery as a single-process run); inputs whose
    name cannot be an id go to `refused`."""
    return [s.video_id for s in cfg.sources(refused)]


def _extract_task(cfg: ExtractConfig, ids: list[str]) -> list[VideoResult]:
    """One task: a resumable single-process extraction of `ids` on this worker."""
    return run_extract(dataclasses.replace(cfg, videos=list(ids)))


def run_on_client(client: Any, cfg: ExtractConfig, progress: Callable[[str, dict], None] | None = None,
                  retries: int = TASK_RETRIES) -> list[VideoResult]:
    """Extract every video of `cfg` with the workers of `client`; returns one result per video, sorted by id."""
    progress = progress or (lambda event, info: None)
    refused: list[Refused] = []
    ids = video_ids(cfg, refused)
    device = worker_device(client, cfg.device)
    wcfg = cfg if device == cfg.device else dataclasses.replace(cfg, device=device)
    progress("start", {"videos": len(ids), "skipped": 0, "frames": 0})
    results: dict[str, VideoResult] = {r.video_id: r for r in refused_results(refused, progress)}
    for _, done in map_shares(client, _extract_task, (wcfg,), ids, retries=retries):
        for r in done:
            results[r.video_id] = r
            progress("video", {"video": r.video_id, "status": r.status, "message": r.message})
    _final_manifest(cfg)
    return [results[v] for v in sorted(results)]


def _final_manifest(cfg: ExtractConfig) -> None:
    """Rebuild the manifest once every task is done (each task rebuilds its own; this one sees them all)."""
    from affcli.cache.store import FeatureStore

    FeatureStore(cfg.cache, mode="a").write_manifest()


def run_distributed(cfg: ExtractConfig, cluster: ClusterOptions,
                    progress: Callable[[str, dict], None] | None = None) -> list[VideoResult]:
    """`extract --dask-local N` (a local cluster), `--scheduler tcp://...` (an existing one) or `--gpus all|0,1`
    (a local cluster of one worker per listed GPU)."""
    with cluster_client(cluster, "extract", cfg.device, check=cfg.validate) as client:
        return run_on_client(client, cfg, progress)


def run_extraction(cfg: ExtractConfig, cluster: ClusterOptions | None = None,
                   progress: Callable[[str, dict], None] | None = None) -> list[VideoResult]:
    """`affcli extract`'s one choice of where to run: this process, or the Dask workers `cluster` names."""
    if cluster:
        return run_distributed(cfg, cluster, progress)
    return run_extract(cfg, progress)
