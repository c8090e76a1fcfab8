"""Whole uint8 frames -> small float results without a whole-frame float copy: the frame is read in row strips, each
strip is made wide-reduced (integer sums or PyTorch's own resize along the width) and only the small result is kept.

At 8K one float32 frame is 380 MiB, more than a decode batch's share of `--decode-memory-mb`; the strips here keep the
float (or int32) working set to `STRIP_BYTES` whatever the resolution. Area averages are bit-identical to
`F.interpolate(frames.float(), mode="area")` (integer bin sums are exact in any order); the antialiased resize
equals the whole-frame one to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

STRIP_BYTES = 16 * 2**20


def _bins(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's adaptive-pooling bins: output i averages input [floor(i n_in / n_out), ceil((i+1) n_in / n_out))."""
    i = torch.arange(n_out, device=device, dtype=torch.int64)
    return (i * n_in) // n_out, ((i + 1) * n_in + n_out - 1) // n_out


def _strip_rows(frames: torch.Tensor, per_elem: int, strip_bytes: int) -> int:
    n, c, _, w = frames.shape
    return max(1, strip_bytes // max(1, per_elem * n * c * w))


def _width_sums(x: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """int32 sums of x [...,W] over [start, end) along the last dim (exact, from one cumulative sum)."""
    cs = x.cumsum(-1, dtype=torch.int32)
    return cs.index_select(-1, end - 1) - cs.index_select(-1, (start - 1).clamp(min=0)) * (start > 0).to(torch.int32)


def area_sums(frames: torch.Tensor, size: tuple[int, int], strip_bytes: int = STRIP_BYTES
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 frames [N,C,H,W] -> (int64 sums [N,C,oh,ow] over PyTorch's adaptive-pooling bins, bin heights [oh], bin
    widths [ow]). Strip by strip: widths summed in int32, then a running sum over rows is kept at the bins' edges
    only, so nothing of the frame's height is held beyond one strip."""
    if frames.dtype != torch.uint8:
        raise TypeError(f"area_sums: expected uint8 frames, got {frames.dtype}")
    n, c, h, w = frames.shape
    oh, ow = size
    dev = frames.device
    ws, we = _bins(w, ow, dev)
    hs, he = _bins(h, oh, dev)
    edges = torch.cat([hs, he]).unique()            # rows r whose running sum (of rows < r) a bin needs
    at = torch.zeros(n, c, len(edges), ow, dtype=torch.int64, device=dev)
    carry = torch.zeros(n, c, 1, ow, dtype=torch.int64, device=dev)
    rows = _strip_rows(frames, 8, strip_bytes)      # the int32 strip and its cumulative sum
    edge_list = edges.tolist()
    for r in range(0, h, rows):
        r1 = min(h, r + rows)
        run = _width_sums(frames[:, :, r:r1].to(torch.int32), ws, we).cumsum(2, dtype=torch.int64) + carry
        sel = [i for i, e in enumerate(edge_list) if r < e <= r1]
        if sel:
            at[:, :, sel] = run[:, :, [edge_list[i] - r - 1 for i in sel]]
        carry = run[:, :, -1:]
    pos = torch.searchsorted(edges, torch.stack([hs, he]))
    return at[:, :, pos[1]] - at[:, :, pos[0]], he - hs, we - ws


def area_downscale(frames: torch.Tensor, size: tuple[int, int], strip_bytes: int = STRIP_BYTES) -> torch.Tensor:
    """`F.interpolate(frames.float(), size, mode="area")` of uint8 frames [N,C,H,W], bit for bit, without the
    whole-frame float copy (float [N,C,oh,ow])."""
    sums, kh, kw = area_sums(frames, size, strip_bytes)
    return sums.float() / kh.float()[:, None] / kw.float()


def resize_aa(frames: torch.Tensor, size: tuple[int, int], strip_bytes: int = STRIP_BYTES) -> torch.Tensor:
    """`F.interpolate(frames.float(), size, mode="bilinear", antialias=True, align_corners=False)` of uint8 frames
    [N,C,H,W] (float [N,C,oh,ow]) to float rounding: the width pass runs on row strips (PyTorch's own weights; a
    height left unchanged is an exact identity), then the height pass on the narrow [N,C,H,ow] result."""
    n, c, h, w = frames.shape
    oh, ow = size
    if n == 0 or h == 0:
        return frames.new_zeros(n, c, oh, ow, dtype=torch.float32)
    rows = _strip_rows(frames, 4, strip_bytes)
    wide = torch.cat([F.interpolate(frames[:, :, r:r + rows].float(), size=(min(rows, h - r), ow), mode="bilinear",
                                    antialias=True, align_corners=False) for r in range(0, h, rows)], 2)
    if oh == h:
        return wide
    return F.interpolate(wide, size=(oh, ow), mode="bilinear", antialias=True, align_corners=False)
