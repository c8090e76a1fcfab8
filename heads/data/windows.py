"""Windows over a concatenated feature table by index arithmetic: never crossing videos, padded with a mask."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Windows:
    """`idx` [N, W] row indices (clamped inside the video), `real` [N, W] False on padding, `video` [N] video index,
    `target` [N] the row whose label a `last`-position window predicts (its last frame + horizon, always inside the
    window's video)."""

    idx: torch.Tensor
    real: torch.Tensor
    video: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    def to(self, device: torch.device | str) -> "Windows":
        """Move to the training device."""
        return Windows(self.idx.to(device), self.real.to(device), self.video.to(device), self.target.to(device))

    def select(self, keep: torch.Tensor) -> "Windows":
        """Subset of windows (bool mask or index tensor)."""
        return Windows(self.idx[keep], self.real[keep], self.video[keep], self.target[keep])


def make_windows(starts: np.ndarray, lengths: np.ndarray, window: int, stride: int, align: str = "start",
                 video_ids: np.ndarray | None = None, dilation: int = 1, horizon: int = 0) -> Windows:
    """Windows of `window` frames every `stride` frames in each video.

    align="start": windows start at 0, S, 2S, ... and are padded after the video end;
    align="end": one window per target frame t = L-1, L-1-S, ...; its frames are e - (W-1-j) * dilation with
    e = t - horizon (padded before the video start): a forecast of t from frames <= e. Windows are enumerated by
    target, so no target lies past its video's end or in the next video; the first `horizon` targets of a video get
    windows of padding only (the head's prior), and the last `horizon` frames of a video end no window.
    """
    if window < 1 or stride < 1 or dilation < 1 or horizon < 0:
        raise ValueError(f"window ({window}), stride ({stride}), dilation ({dilation}) must be >= 1, "
                         f"horizon ({horizon}) >= 0")
    if align == "start" and (dilation != 1 or horizon != 0):
        raise ValueError("dilation and horizon need label_position=last (align='end')")
    if align not in ("start", "end"):
        raise ValueError(f"align must be 'start' or 'end', not {align!r}")
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    vids = np.arange(len(starts)) if video_ids is None else np.asarray(video_ids, dtype=np.int64)
    keep = lengths > 0
    starts, lengths, vids = starts[keep], lengths[keep], vids[keep]
    n_w = np.where(lengths > window, -(-(lengths - window) // stride) + 1, 1)
    if align == "end":
        n_w = -(-lengths // stride)
    which = np.repeat(np.arange(len(starts)), n_w)
    k = np.arange(int(n_w.sum())) - np.repeat(np.cumsum(n_w) - n_w, n_w)
    L = lengths[which][:, None]
    if align == "start":
        pos = (k * stride)[:, None] + np.arange(window)[None]
        t = pos[:, -1]
    else:
        t = lengths[which] - 1 - k * stride
        pos = (t - horizon)[:, None] - (window - 1 - np.arange(window))[None] * dilation
    real = (pos >= 0) & (pos < L)
    idx = starts[which][:, None] + np.clip(pos, 0, L - 1)
    target = starts[which] + np.clip(t, 0, lengths[which] - 1)
    return Windows(torch.from_numpy(idx), torch.from_numpy(real), torch.from_numpy(vids[which]), torch.from_numpy(target))


def frame_windows(starts: np.ndarray, lengths: np.ndarray, window: int, video_ids: np.ndarray | None = None,
                  dilation: int = 1, horizon: int = 0) -> Windows:
    """One window per target frame (stride 1, left-padded): for `last`-position prediction of every frame."""
    return make_windows(starts, lengths, window, 1, "end", video_ids, dilation, horizon)


def sample_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device | str,
                   shuffle: bool = True) -> Iterator[torch.Tensor]:
    """Window numbers in batches, shuffled by a seeded generator (on CPU, so runs repeat on any device)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(device)
    for b in range(0, n, batch_size):
        yield order[b:b + batch_size]


def gather(modalities: dict[str, torch.Tensor], valid: dict[str, torch.Tensor], win: Windows,
           rows: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One gather per modality: features [B, W, D] and validity [B, W] (invalid and padded frames zeroed)."""
    idx, real = win.idx[rows], win.real[rows]
    xs, vs = {}, {}
    for m, feats in modalities.items():
        ok = valid[m][idx] & real
        xs[m] = torch.where(ok.unsqueeze(-1), feats[idx].to(dtype), 0.0)
        vs[m] = ok
    return xs, vs
