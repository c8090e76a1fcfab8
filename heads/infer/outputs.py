"""Whole-video inference: overlapping windows, outputs averaged over overlaps (or one window ending at each frame)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from affcli.common.cluster import worker_memo
from affcli.common.device import autocast, resolve_device
from affcli.heads.config import RunConfig
from affcli.heads.data.dataset import Data
from affcli.heads.data.windows import frame_windows, gather, make_windows
from affcli.heads.infer.evaluation import score
from affcli.heads.infer.postprocess import finish_rows
from affcli.heads.model.checkpoint import CHECKPOINT, load_model
from affcli.heads.model.head import HeadModel
from affcli.heads.tasks import to_prediction


@torch.no_grad()
def predict_rows(model: HeadModel, data: Data, video_idx: list[int] | np.ndarray, window: int, stride: int | None = None,
                 batch_size: int = 256, amp: bool = True,
                 per_video: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-frame predictions (class/AU probabilities, VA values) for every row of the given videos, in video order.
    `per_video`: no batch holds windows of two videos, so a video's values do not depend on which videos are
    predicted with it (floating-point results of a batch depend on its composition)."""
    model.eval()
    vi = np.asarray(video_idx, dtype=np.int64)
    starts, lengths = data.starts[vi], data.lengths[vi]
    last = model.spec.label_position == "last"
    sp = model.spec
    win = (frame_windows(starts, lengths, window, vi, sp.dilation, sp.horizon) if last
           else make_windows(starts, lengths, window, stride or max(1, window // 2), "start", vi)).to(data.device)
    total = int(sum(data.lengths))
    acc = {o.key: torch.zeros(total, o.dim, device=data.device) for o in model.outputs}
    cnt = torch.zeros(total, device=data.device)
    for b, e in _batches(len(win), batch_size, win.video.cpu().numpy() if per_video else None):
        rows = torch.arange(b, e, device=data.device)
        xs, vs = gather(data.modalities, data.valid, win, rows)
        with autocast(data.device, amp):
            out = model(xs, vs, win.real[rows])
        idx, real = (win.target[rows], torch.ones(len(rows), dtype=torch.bool, device=data.device)) if last \
            else (win.idx[rows], win.real[rows])
        flat, keep = idx.reshape(-1), real.reshape(-1)
        for o in model.outputs:
            p = to_prediction(o.key, o.kind, out[o.key]).reshape(-1, o.dim)
            acc[o.key].index_add_(0, flat[keep], p[keep])
        cnt.index_add_(0, flat[keep], torch.ones(int(keep.sum()), device=data.device))
    rows_all = torch.from_numpy(np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])
                                if len(vi) else np.zeros(0, np.int64)).to(data.device)
    c = cnt[rows_all].clamp_min(1).unsqueeze(1)
    return rows_all, {k: v[rows_all] / c for k, v in acc.items()}


def _batches(n: int, batch_size: int, video: np.ndarray | None = None) -> list[tuple[int, int]]:
    """[begin, end) of each batch of `n` windows: every `batch_size` windows, or restarted at each change of `video`
    (the windows' video indices, given for per-video batches)."""
    edges = np.concatenate([[0], np.flatnonzero(np.diff(video)) + 1, [n]]) if video is not None and n \
        else np.array([0, n])
    return [(b, min(b + batch_size, int(e))) for s, e in zip(edges[:-1].tolist(), edges[1:].tolist())
            for b in range(s, e, batch_size)]


def run_outputs(model: HeadModel, cfg: RunConfig, data: Data, smooth: int | None = None) -> dict[str, torch.Tensor]:
    """A run's post-processed predictions (interpolation, smoothing: the run's unless `smooth`) over every row of
    `data`, videos in order, batched per video: what `predict` and teacher targets give, whatever the video split."""
    rows, preds = predict_rows(model, data, list(range(len(data.videos))), cfg.window, cfg.eval_stride,
                               max(cfg.batch_size, 256), cfg.amp, per_video=True)
    return finish_rows(preds, {m: v[rows] for m, v in data.valid.items()}, data.lengths, cfg.task, cfg.interpolate,
                       cfg.smooth if smooth is None else smooth)


def by_video(preds: dict[str, torch.Tensor], data: Data) -> dict[str, dict[str, np.ndarray]]:
    """{video: {output key: [n_frames, dim] float32}} of predictions over every row of `data` (videos in order)."""
    arrays = {k: v.float().cpu().numpy() for k, v in preds.items()}
    return {v: {k: a[int(s):int(s + n)] for k, a in arrays.items()}
            for v, s, n in zip(data.videos, data.starts, data.lengths)}


def split_predictions(model: HeadModel, data: Data, cfg: RunConfig, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(rows, post-processed per-frame predictions) of a split's videos: what validation scores."""
    _, _, vi = data.split_rows(split)
    rows, preds = predict_rows(model, data, vi, cfg.window, cfg.eval_stride, max(cfg.batch_size, 256), cfg.amp)
    preds = finish_rows(preds, {m: v[rows] for m, v in data.valid.items()}, data.lengths[vi], cfg.task,
                        cfg.interpolate, cfg.smooth)
    return rows.cpu().numpy(), {k: v.float().cpu().numpy() for k, v in preds.items()}


def split_labels(data: Data, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The dense labels (and masks) of `rows` of `data`, on the host."""
    idx = torch.as_tensor(rows, device=data.device)
    return {k: v[idx].cpu().numpy() for k, v in data.labels.items()}


def evaluate(model: HeadModel, data: Data, cfg: RunConfig, split: str,
             post: dict | None = None) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """Score a split: (metrics, rows, per-frame predictions); `post` = a run's tuned thresholds/biases."""
    r, p = split_predictions(model, data, cfg, split)
    return score(cfg.task, p, split_labels(data, r), cfg.edition, **(post or {})), r, p


def video_outputs(run_dir: str | Path, cache: str | Path, videos: list[str], device: str | None = None,
                  smooth: int | None = None, skip_bad: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """{video: {output key: [n_frames, dim] float32}}: a run's post-processed per-frame outputs (its smoothing unless
    `smooth`) for `videos` of `cache`. Batched per video, so any split of the videos gives the same arrays; the
    model is loaded once per Dask worker. `skip_bad` leaves bad videos out (one warning line each)."""
    from affcli.heads.data.loading import load_features

    cfg = RunConfig.from_run(run_dir, cache=str(cache), device=device)
    dev = resolve_device(cfg.device)
    ckpt = (Path(run_dir) / CHECKPOINT).resolve()
    stamp = (str(ckpt), ckpt.stat().st_mtime_ns, ckpt.stat().st_size) if ckpt.exists() else (str(ckpt),)
    model = worker_memo(("model", *stamp, str(dev)), lambda: load_model(run_dir, dev))
    table = load_features(cfg, list(cfg.features), list(videos), skip_bad)
    data = Data.from_table(table, {}, {"all": list(table.videos)}, cfg.task, cfg.features, device=dev)
    return by_video(run_outputs(model, cfg, data, smooth), data)
