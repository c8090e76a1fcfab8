"""A run folder of any kind, opened once for inference: one trained head ('single'), a fold run ('folds': the mean
of its fold models) or an ensemble ('ensemble': its member runs combined). predict, evaluate, submit, ensemble and
stream read runs only through `open_run`, so each reads every kind the same way.

Per-frame outputs always come from each single run's own inference path (heads.infer.outputs), so whatever a member
applies to its inputs or outputs (interpolation, smoothing, ...) stays applied; members are then combined
(heads.infer.combine) with the kind's weights and method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from affcli.common.runs import read_json
from affcli.heads.config import RunConfig, run_kind
from affcli.heads.infer.combine import check_method, combine, combined_postprocess

ENSEMBLE_KEY = "ensemble"
MAX_DEPTH = 4


def fold_dir(out: str | Path, k: int) -> Path:
    """The sub-run folder of fold k of a fold run."""
    return Path(out) / f"fold{k}"


def fold_runs(run_dir: str | Path) -> list[Path]:
    """The fold sub-run folders of a fold run, in fold order (refused while any is missing its checkpoint)."""
    info = read_json(Path(run_dir) / "config.json").get("fold_info") or {}
    k = int(info.get("k", 0))
    if k < 2:
        raise ValueError(f"{run_dir}: config.json of a fold run without fold_info.k")
    dirs = [fold_dir(run_dir, i) for i in range(k)]
    missing = [d.name for d in dirs if not (d / "model.safetensors").is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: fold run not finished ({', '.join(missing)} without model.safetensors)")
    return dirs


@dataclass
class RunView:
    """What inference needs of a run folder: its face config (task, cache, labels, splits, edition, features: the
    union of its members'), its members (none for a single run), their weights and method, and its decision rule."""

    path: Path
    kind: str
    cfg: RunConfig
    members: list["RunView"] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    method: str = "mean"
    post: dict[str, Any] = field(default_factory=dict)

    def leaves(self) -> list[Path]:
        """Every single run inside (itself for a single run)."""
        return [self.path] if self.kind == "single" else [p for m in self.members for p in m.leaves()]

    def video_outputs(self, videos: list[str], device: str | None = None, smooth: int | None = None,
                      skip_bad: bool = False, cache: str | None = None) -> dict[str, dict[str, np.ndarray]]:
        """{video: {output key: [n_frames, dim]}} over `videos` of the run's cache (or `cache`): a single run's
        post-processed outputs, or its members' combined (videos a member left out as bad are left out)."""
        cache = cache or self.cfg.cache
        if self.kind == "single":
            from affcli.heads.infer.outputs import video_outputs

            return video_outputs(self.path, cache, list(videos), device, smooth, skip_bad)
        per = [m.video_outputs(videos, device, smooth, skip_bad, cache) for m in self.members]
        keep = [v for v in videos if all(v in p for p in per)]
        posts = [m.post for m in self.members]
        out = {}
        for v in keep:
            lengths = {len(next(iter(p[v].values()))) for p in per}
            if len(lengths) != 1:
                raise ValueError(f"{self.path}: members give {sorted(lengths)} frames for video {v!r}; an ensemble's "
                                 f"members must read feature sets of the same frames")
            out[v] = combine(self.cfg.task, [p[v] for p in per], self.weights, self.method, posts)
        return out

    def split_outputs(self, data: Any, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(rows, per-frame outputs) of a labelled split of `data` (heads.data.loading.prepare_data of self.cfg):
        a single run predicts from `data` exactly as training validated; other kinds combine their members'."""
        if self.kind == "single":
            from affcli.heads.infer.outputs import split_predictions
            from affcli.heads.model.checkpoint import load_model

            return split_predictions(load_model(self.path, data.device), data, self.cfg, split)
        vids = [data.videos[i] for i in data.splits[split]]
        outs = self.video_outputs(vids, str(data.device), None, self.cfg.skip_bad)
        lost = [v for v in vids if v not in outs]
        if lost:
            raise ValueError(f"{self.path}: no outputs for {len(lost)} {split} video(s) (e.g. {lost[0]!r})")
        rows = data.rows_of(split).cpu().numpy()
        return rows, {k: np.concatenate([outs[v][k] for v in vids]) for k in outs[vids[0]]}

    def check(self) -> None:
        """Load every single run's model on the CPU (what a Dask client checks before sending work)."""
        from affcli.heads.model.checkpoint import load_model

        for p in self.leaves():
            load_model(p, "cpu")


def _ensemble_record(run_dir: Path) -> dict[str, Any]:
    rec = read_json(run_dir / "config.json").get(ENSEMBLE_KEY)
    if not isinstance(rec, dict) or not rec.get("members"):
        raise ValueError(f"{run_dir}: config.json of an ensemble without its members")
    return rec


def open_run(run_dir: str | Path, cache: str | None = None, labels: str | Path | None = None,
             device: str | None = None, skip_bad: bool | None = None, smooth: int | None = None,
             _depth: int = 0) -> RunView:
    """Open a run folder of any kind; cache/labels/device/skip_bad/smooth override its stored ones (members read the
    overriding cache too). One-line errors name the folder and the problem."""
    run_dir = Path(run_dir)
    if _depth > MAX_DEPTH:
        raise ValueError(f"{run_dir}: ensembles nested deeper than {MAX_DEPTH} (a member naming its own ensemble?)")
    kind = run_kind(run_dir)
    over = {"cache": str(cache) if cache else None, "labels": str(labels) if labels else None, "device": device,
            "skip_bad": skip_bad, "smooth": smooth}
    cfg = RunConfig.from_run(run_dir, **over)
    if kind == "single":
        from affcli.heads.infer.postprocess import load_postprocess

        return RunView(run_dir, kind, cfg, post=load_postprocess(run_dir))
    if kind == "folds":
        members = [open_run(p, cfg.cache, None, device, skip_bad, smooth, _depth + 1) for p in fold_runs(run_dir)]
        weights, method = [1.0 / len(members)] * len(members), "mean"
    else:
        rec = _ensemble_record(run_dir)
        method = check_method(str(rec.get("method", "mean")))
        paths = [Path(m["run"]) if Path(m["run"]).is_absolute() else run_dir / m["run"] for m in rec["members"]]
        members = [open_run(p, cfg.cache, None, device, skip_bad, smooth, _depth + 1) for p in paths]
        weights = [float(m.get("weight", 1.0)) for m in rec["members"]]
    tasks = {m.cfg.task for m in members}
    if tasks != {cfg.task}:
        raise ValueError(f"{run_dir}: members predict {', '.join(sorted(tasks))}, the run says {cfg.task}")
    post = combined_postprocess(cfg.task, [m.post for m in members], weights, method)
    return RunView(run_dir, kind, cfg, members, weights, method, post)


def run_video_outputs(run_dir: str | Path, cache: str, videos: list[str], device: str | None = None,
                      smooth: int | None = None, skip_bad: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """`open_run(run_dir, cache).video_outputs(...)`: one Dask task of predict, and what teachers read."""
    return open_run(run_dir, cache, device=device).video_outputs(videos, device, smooth, skip_bad)
