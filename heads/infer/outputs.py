"""Whole-video inference: overlapping windows, outputs averaged over overlaps (or one window ending at each frame)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from affcli.common.device import autocast
from affcli.heads.data.dataset import Data
from affcli.heads.model.head import HeadModel
from affcli.heads.tasks import to_prediction
from affcli.heads.data.windows import frame_windows, gather, make_windows


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


def smooth_rows(preds: dict[str, torch.Tensor], lengths: np.ndarray, radius: int) -> dict[str, torch.Tensor]:
    """Centred moving average over +-radius frames within each video (rows concatenated in video order)."""
    if radius <= 0 or not preds:
        return preds
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    L = np.repeat(lengths, lengths)
    lo = np.maximum(pos - radius, 0)
    hi = np.minimum(pos + radius, L - 1) + 1
    dev = next(iter(preds.values())).device
    lo_t, hi_t = torch.from_numpy(lo).to(dev), torch.from_numpy(hi).to(dev)
    base = torch.from_numpy(np.repeat(starts + np.arange(len(lengths)), lengths)).to(dev)
    out = {}
    for k, v in preds.items():
        cs = _video_cumsums(v.double(), starts, lengths)
        out[k] = ((cs[base + hi_t] - cs[base + lo_t]) / (hi_t - lo_t).unsqueeze(1)).to(v.dtype)
    return out


def _video_cumsums(v: torch.Tensor, starts: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
    """Each video's running sum with a leading zero row, videos concatenated ([n_rows + n_videos, dim]): a video's
    sums do not depend on the videos before it."""
    parts = []
    for s, n in zip(starts.tolist(), lengths.tolist()):
        parts += [v.new_zeros(1, v.shape[1]), v[s:s + n].cumsum(0)]
    return torch.cat(parts) if parts else v.new_zeros(0, v.shape[1])


def _batches(n: int, batch_size: int, video: np.ndarray | None = None) -> list[tuple[int, int]]:
    """[begin, end) of each batch of `n` windows: every `batch_size` windows, or restarted at each change of `video`
    (the windows' video indices, given for per-video batches)."""
    edges = np.concatenate([[0], np.flatnonzero(np.diff(video)) + 1, [n]]) if video is not None and n \
        else np.array([0, n])
    return [(b, min(b + batch_size, int(e))) for s, e in zip(edges[:-1].tolist(), edges[1:].tolist())
            for b in range(s, e, batch_size)]


def run_outputs(model: HeadModel, cfg: Any, data: Data, smooth: int | None = None) -> dict[str, torch.Tensor]:
    """A run's post-processed predictions (interpolation, smoothing: the run's unless `smooth`) over every row of
    `data`, videos in order, batched per video: what `predict` and teacher targets give, whatever the video split."""
    from affcli.heads.infer.postprocess import finish_rows

    rows, preds = predict_rows(model, data, list(range(len(data.videos))), cfg.window, cfg.eval_stride,
                               max(cfg.batch_size, 256), cfg.amp, per_video=True)
    return finish_rows(preds, {m: v[rows] for m, v in data.valid.items()}, data.lengths, cfg.task, cfg.interpolate,
                       cfg.smooth if smooth is None else smooth)


def by_video(preds: dict[str, torch.Tensor], data: Data) -> dict[str, dict[str, np.ndarray]]:
    """{video: {output key: [n_frames, dim] float32}} of predictions over every row of `data` (videos in order)."""
    arrays = {k: v.float().cpu().numpy() for k, v in preds.items()}
    return {v: {k: a[int(s):int(s + n)] for k, a in arrays.items()}
            for v, s, n in zip(data.videos, data.starts, data.lengths)}
