"""Whole-video inference: overlapping windows, outputs averaged over overlaps (or one window ending at each frame)."""
from __future__ import annotations

import numpy as np
import torch

from affcli.common.device import autocast
from affcli.heads.data import Data
from affcli.heads.model import HeadModel
from affcli.heads.tasks import to_prediction
from affcli.heads.windows import frame_windows, gather, make_windows


@torch.no_grad()
def predict_rows(model: HeadModel, data: Data, video_idx: list[int] | np.ndarray, window: int, stride: int | None = None,
                 batch_size: int = 256, amp: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-frame predictions (class/AU probabilities, VA values) for every row of the given videos, in video order."""
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
    for b in range(0, len(win), batch_size):
        rows = torch.arange(b, min(b + batch_size, len(win)), device=data.device)
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
    if radius <= 0:
        return preds
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    L = np.repeat(lengths, lengths)
    lo = np.repeat(starts, lengths) + np.maximum(pos - radius, 0)
    hi = np.repeat(starts, lengths) + np.minimum(pos + radius, L - 1) + 1
    out = {}
    for k, v in preds.items():
        cs = torch.cat([v.new_zeros(1, v.shape[1]), v.double().cumsum(0)])
        lo_t, hi_t = torch.from_numpy(lo).to(v.device), torch.from_numpy(hi).to(v.device)
        out[k] = ((cs[hi_t] - cs[lo_t]) / (hi_t - lo_t).unsqueeze(1)).to(v.dtype)
    return out
