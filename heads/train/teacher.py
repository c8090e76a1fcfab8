"""Teachers for distillation: finished runs whose per-frame outputs become soft targets where labels are missing.

`predict_teacher(cache, run, videos)` is a plain function of a feature cache and a run folder (what a distributed
engine maps over chunks of videos); `ensure_targets` computes only the videos not yet cached beside the features
(cache.teacher, `teacher/<run-hash>`), on Dask workers with a cluster (`affcli cache teacher --dask-local N`,
`cache_teachers`), and `teacher_source` assembles them over a training run's rows, mapping the teachers' outputs
onto the student's by output key (one run per task, or one multi-task run).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affcli.common.cluster import ClusterOptions, Progress, map_videos
from affcli.common.runs import config_hash, file_sha256
from affcli.heads.config import RunConfig, hashable_config
from affcli.heads.data.dataset import Data
from affcli.heads.tasks import Output, task_outputs

NOT_IDENTITY = ("out", "name", "cache", "labels", "device", "save_predictions", "plots", "skip_bad")
Predictor = Callable[[str, str, list[str], str | None], dict[str, dict[str, np.ndarray]]]


def teacher_fingerprint(run_dir: str | Path, cache: str | Path) -> dict[str, Any]:
    """What identifies a teacher's soft targets: its config (paths left out), checkpoint hash, outputs and the
    identity of the feature sets it reads in this cache."""
    from affcli.cache.fingerprint import IDENTITY_FIELDS
    from affcli.cache.store import FeatureStore
    from affcli.heads.model.checkpoint import CHECKPOINT, load_model
    run_dir = Path(run_dir)
    cfg = RunConfig.from_run(run_dir)
    ckpt = run_dir / CHECKPOINT
    if not ckpt.exists():
        raise FileNotFoundError(f"distill teacher {run_dir}: no {CHECKPOINT} (not a finished train-head run)")
    store = FeatureStore(cache, mode="r")
    missing = [f for f in cfg.features if f not in store.feature_sets()]
    if missing:
        raise ValueError(f"distill teacher {run_dir}: its feature sets {', '.join(missing)} are not in {cache}")
    feats = {f: {k: store.fingerprint(f).get(k) for k in IDENTITY_FIELDS} for f in cfg.features}
    return {"config": config_hash(hashable_config({k: v for k, v in cfg.to_dict().items() if k not in NOT_IDENTITY})),
            "checkpoint_sha256": file_sha256(ckpt), "features": feats,
            "outputs": [[o.key, o.dim, o.kind] for o in task_outputs(cfg.task)]}


@torch.no_grad()
def predict_teacher(cache: str, run_dir: str, videos: list[str],
                    device: str | None = "cpu") -> dict[str, dict[str, np.ndarray]]:
    """{video: {output key: [n_frames, dim] float32}}: a run's probabilities/values for every frame of `videos`
    (its own feature sets from `cache`), with the run's interpolation and smoothing, as `predict` gives them (batched
    per video, so the same whatever the split of the videos over workers)."""
    from affcli.heads.infer.outputs import video_outputs

    return video_outputs(run_dir, cache, list(videos), device)


def _write_share(cache: str, run_dir: str, key: str, videos: list[str],
                 device: str | None = "cpu") -> dict[str, bool]:
    """One Dask task of `cache teacher`: predict and write the targets of the share's videos not yet complete (a task
    re-run after its worker died resumes); {video: True} for each video of the share."""
    from affcli.cache.teacher import read_targets

    targets = read_targets(cache, key, mode="a")
    done = set(targets.videos())
    todo = [v for v in videos if v not in done]
    for video, arrays in (predict_teacher(cache, run_dir, todo, device) if todo else {}).items():
        targets.write(video, arrays)
    return dict.fromkeys(videos, True)


def ensure_targets(cache: str | Path, run_dir: str | Path, videos: Sequence[str], device: str | None = "cpu",
                   predict: Predictor | None = None, cluster: ClusterOptions | None = None,
                   progress: Progress | None = None) -> tuple[str, int]:
    """Cache a teacher's targets for the `videos` not yet cached (under teacher/<run-hash>); returns the run hash
    and how many videos were predicted now (0 when all were cached). `predict` (default `predict_teacher`) may
    be any function of (cache, run, videos, device); with `cluster` (--dask-local / --scheduler / --gpus) Dask
    workers predict and write shares of the videos, each loading the teacher once."""
    from affcli.cache.errors import CacheError
    from affcli.cache.teacher import open_targets

    run_dir = Path(run_dir)
    targets = open_targets(cache, teacher_fingerprint(run_dir, cache), run=str(run_dir.resolve()))
    todo = sorted(set(videos) - set(targets.videos()))
    if todo and cluster:
        map_videos(cluster, "cache teacher", _write_share, (str(cache), str(run_dir), targets.key), todo,
                   device=device, progress=progress)
        lost = sorted(set(todo) - set(targets.videos()))
        if lost:
            raise CacheError(f"{cache}: teacher {targets.key}: {len(lost)} video(s) were not written: "
                             f"{', '.join(lost[:5])}")
    elif todo:
        for video, arrays in (predict or predict_teacher)(str(cache), str(run_dir), todo, device).items():
            targets.write(video, arrays)
    return targets.key, len(todo)


def cache_teachers(cache: str | Path, runs: Sequence[str | Path], videos: Sequence[str] | None = None,
                   device: str | None = None, cluster: ClusterOptions | None = None,
                   progress: Progress | None = None) -> list[tuple[str, str, int]]:
    """`affcli cache teacher`: each run's soft targets for `videos` (default: every video complete in the run's
    feature sets), computed where missing, what `train-head --distill-from` then reads back; [(run, key, new)]."""
    from affcli.cache.loader import common_videos
    from affcli.cache.store import FeatureStore
    out = []
    for run in runs:
        feats = RunConfig.from_run(run).features
        ids = list(videos) if videos is not None else common_videos(FeatureStore(cache, mode="r"), list(feats))
        key, n = ensure_targets(cache, run, ids, device, cluster=cluster, progress=progress)
        out.append((str(run), key, n))
    return out


def _compatible(run: str, have: Sequence[Output], want: dict[str, Output]) -> list[Output]:
    """The teacher outputs the student has under the same key; a key with another kind or width is refused."""
    out = []
    for o in have:
        s = want.get(o.key)
        if s is None:
            continue
        if (s.kind, s.dim) != (o.kind, o.dim):
            raise ValueError(f"distill teacher {run}: output {o.key!r} is {o.kind} of width {o.dim}, the student's "
                             f"is {s.kind} of width {s.dim}")
        out.append(o)
    return out


def _from_cache(data: Data, cfg: Any, run: str) -> tuple[list[Output], dict[str, np.ndarray]]:
    from affcli.cache.teacher import read_targets
    key, _ = ensure_targets(cfg.cache, run, data.videos, str(data.device))
    cached = read_targets(cfg.cache, key)
    outs = task_outputs(RunConfig.from_run(run).task)
    arrays: dict[str, np.ndarray] = {}
    for i, v in enumerate(data.videos):
        t = cached.read(v)
        n = int(data.lengths[i])
        for k, a in t.items():
            if a.shape[0] != n:
                raise ValueError(f"distill teacher {run}: cached targets of {v!r} have {a.shape[0]} frames, the "
                                 f"features {n}")
            arrays.setdefault(k, np.zeros((int(sum(data.lengths)), a.shape[1]), np.float32))
            arrays[k][int(data.starts[i]):int(data.starts[i]) + n] = a
    return list(outs), arrays


def _in_memory(data: Data, cfg: Any, run: str) -> tuple[list[Output], dict[str, np.ndarray]]:
    """Without a cache (features given as a table): the teacher predicts on the student's own features."""
    from affcli.heads.model.checkpoint import load_model
    from affcli.heads.infer.outputs import run_outputs
    t = load_model(run, data.device)
    missing = [m for m in t.modalities if m not in data.modalities or data.in_dims[m] != t.in_dims[m]]
    if missing:
        raise ValueError(f"distill teacher {run}: its {', '.join(missing)} features differ from this run's")
    tcfg = RunConfig.from_run(run, device=str(data.device))
    return list(t.outputs), {k: v.float().cpu().numpy() for k, v in run_outputs(t, tcfg, data).items()}


def teacher_targets(data: Data, cfg: Any, runs: Sequence[str]) -> dict[str, torch.Tensor]:
    """Soft targets over every row of `data` by output key (several teachers of one key are averaged); from the
    cache beside the features when the run has one."""
    want = {o.key: o for o in task_outputs(cfg.task)}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for run in runs:
        outs, arrays = (_from_cache if cfg.cache else _in_memory)(data, cfg, str(run))
        for o in _compatible(str(run), outs, want):
            sums[o.key] = sums.get(o.key, 0) + arrays[o.key]
            counts[o.key] = counts.get(o.key, 0) + 1
    if not sums:
        have = ", ".join(str(r) for r in runs)
        raise ValueError(f"distill: the teachers ({have}) predict none of the outputs of task {cfg.task} "
                         f"({', '.join(want)})")
    return {k: torch.from_numpy(v / counts[k]).to(data.device) for k, v in sums.items()}


def teacher_source(data: Data, cfg: Any) -> Callable[[str | Sequence[str]], dict[str, torch.Tensor]]:
    """What a LossContext calls with a run folder (or several) to get that teacher's targets over `data`'s rows."""
    memo: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}

    def load(runs: str | Sequence[str]) -> dict[str, torch.Tensor]:
        key = (runs,) if isinstance(runs, str) else tuple(runs)
        if key not in memo:
            cuda = [data.device.index or 0] if data.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):  # same seed stream whether computed or read back
                memo[key] = teacher_targets(data, cfg, key)
        return memo[key]

    return load


def loss_with_distill(cfg: Any) -> str:
    """The run's loss string, with `distill_weight*distill` added when --distill-from is given and it names none."""
    from affcli.heads.spec import parse_loss
    from affcli.heads.tasks import get_task

    loss = get_task(cfg.task).default_loss if cfg.loss in ("", "auto", None) else cfg.loss
    if not cfg.distill_from:
        return cfg.loss
    if any(p.name == "distill" for _, p in parse_loss(loss)):
        if cfg.distill_weight != 1.0:
            raise ValueError("distill_weight: the loss already has a distill term; give its weight there")
        return loss
    return f"{loss}+{cfg.distill_weight:g}*distill"
