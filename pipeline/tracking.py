"""Face tracks between detections: detect every k-th frame, link neighbouring detections by IoU, fill the frames
between them by interpolation, and re-detect the frames of an interval whose link breaks.

Key frames are frame 0, every k-th frame, the two frames around a scene cut and the last frame of a video.
An interval between two key frames of the same shot is filled by linear interpolation of box, score and
landmarks when both keys hold a face whose boxes overlap by IoU >= `iou`; when only one key holds a face or
the IoU is lower (the track was lost in between) every frame inside is detected; when neither holds a face
the interval has none. The result of a frame does not depend on how the video was split into batches.
All of it is batched tensor work on the frames' device; no Python loop runs per frame.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from affcli.pipeline.crops import float_chunks
from affcli.pipeline.strips import area_sums


class FaceTrack(NamedTuple):
    """One face per frame: boxes [N,4] (x0,y0,x1,y1 px), scores [N], landmarks [N,5,2] (NaN without a face or
    without landmarks), valid [N] bool; `detected` [N] bool marks frames the detector itself saw."""

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor
    valid: torch.Tensor
    detected: torch.Tensor

    @staticmethod
    def empty(n: int, device: torch.device | str = "cpu") -> FaceTrack:
        nan = float("nan")
        return FaceTrack(torch.full((n, 4), nan, device=device), torch.zeros(n, device=device),
                         torch.full((n, 5, 2), nan, device=device), torch.zeros(n, dtype=torch.bool, device=device),
                         torch.zeros(n, dtype=torch.bool, device=device))

    def index(self, i: torch.Tensor | slice) -> FaceTrack:
        return FaceTrack(*(t[i] for t in self))

    def cat(self, other: FaceTrack) -> FaceTrack:
        return FaceTrack(*(torch.cat([a, b]) for a, b in zip(self, other)))


# frames [M,3,H,W] uint8 -> (boxes [M,4], scores [M], landmarks [M,5,2], valid [M]) of the largest face
Detector = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


def box_iou_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes a[i] and b[i] ([K,4] x0,y0,x1,y1); NaN boxes give 0."""
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1) + (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1) - inter
    return torch.nan_to_num(inter / area.clamp(min=1e-9), nan=0.0)


def thumbnails(frames: torch.Tensor, side: int = 16) -> torch.Tensor:
    """Grey side x side thumbnails [N,side*side] in 0..1 of uint8 frames [N,3,H,W], for cut detection: area averages of
    the channel mean (integer bin sums over row strips, so no whole-frame float copy)."""
    sums, kh, kw = area_sums(frames, (side, side))
    count = (3 * 255) * (kh[:, None] * kw).double()
    return (sums.sum(1).double() / count).float().flatten(1)


class Tracker:
    """Per-video tracker: `push` batches of frames in order, get back the frames resolved so far with their faces.

    At most k-1 frames (those after the last key frame) wait for the next batch; `final=True` resolves all.
    """

    def __init__(self, detector: Detector, every: int = 1, iou: float = 0.4, cut: float = 0.12,
                 max_bytes: int | None = None):
        if every < 1 or not 0 <= iou <= 1 or cut <= 0:
            raise ValueError(f"tracking: bad options every={every} iou={iou} cut={cut}")
        self.detector, self.every, self.iou, self.cut = detector, int(every), float(iou), float(cut)
        self.max_bytes = max_bytes  # the detector and the thumbnails see frames in chunks whose float copies fit
        self.start = 0                       # global index of the first pending frame
        self.pending: torch.Tensor | None = None
        self.pending_cut: torch.Tensor | None = None
        self.last_thumb: torch.Tensor | None = None
        self.prev: FaceTrack | None = None    # the last key frame's detection (one row)
        self.n_detected = 0

    def _detect(self, frames: torch.Tensor) -> FaceTrack:
        if len(frames) == 0:
            return FaceTrack.empty(0, frames.device)
        parts = [self.detector(frames[s]) for s in float_chunks(frames, self.max_bytes)]
        boxes, scores, marks, valid = (torch.cat([p[i] for p in parts]) for i in range(4))
        self.n_detected += len(frames)
        dev = frames.device
        return FaceTrack(boxes.to(dev, torch.float32), scores.to(dev, torch.float32),
                         marks.to(dev, torch.float32), valid.to(dev), torch.ones(len(frames), dtype=torch.bool, device=dev))

    def _cuts(self, frames: torch.Tensor) -> torch.Tensor:
        """cut[t]: frame t starts a new shot (differs from the frame before by more than `cut`)."""
        if self.every == 1:
            return torch.zeros(len(frames), dtype=torch.bool, device=frames.device)
        th = torch.cat([thumbnails(frames[s]) for s in float_chunks(frames, self.max_bytes)])
        before = torch.cat([th[:1] if self.last_thumb is None else self.last_thumb, th[:-1]])
        self.last_thumb = th[-1:]
        return (th - before).abs().mean(1) > self.cut

    def push(self, frames: torch.Tensor, final: bool = False) -> tuple[torch.Tensor, FaceTrack]:
        """Frames [B,3,H,W] uint8 of this video, in order -> (resolved frames [R,...], their FaceTrack [R])."""
        cut = self._cuts(frames) if len(frames) else frames.new_zeros(0, dtype=torch.bool)
        if self.pending is not None:
            frames, cut = torch.cat([self.pending, frames]), torch.cat([self.pending_cut, cut])
        n, dev = len(frames), frames.device
        if n == 0:
            return frames, FaceTrack.empty(0, dev)
        g = torch.arange(self.start, self.start + n, device=dev)
        key = (g % self.every == 0) | cut
        key[:-1] |= cut[1:]
        if final:
            key[-1] = True
        kpos = key.nonzero().flatten()
        if len(kpos) == 0:                                   # only frames waiting for the next key
            self.pending, self.pending_cut = frames, cut
            return frames[:0], FaceTrack.empty(0, dev)
        last = int(kpos[-1])
        out = FaceTrack.empty(last + 1, dev)
        det = self._detect(frames[kpos])
        out = _scatter(out, kpos, det)
        # intervals (left key, right key) over [prev key] + keys of this window; positions relative to the window
        lpos = torch.cat([kpos.new_tensor([-1]), kpos[:-1]]) if self.prev is not None else kpos[:-1]
        rpos = kpos if self.prev is not None else kpos[1:]
        ldet = self.prev.cat(det.index(slice(0, -1))) if self.prev is not None else det.index(slice(0, -1))
        rdet = det if self.prev is not None else det.index(slice(1, None))
        gap = rpos - lpos - 1
        if bool((gap > 0).any()):
            out = self._fill(frames, out, lpos, rpos, ldet, rdet, gap)
        self.prev = det.index(slice(-1, None))
        self.start += last + 1
        rest = frames[last + 1:]
        self.pending, self.pending_cut = (rest, cut[last + 1:]) if len(rest) else (None, None)
        return frames[:last + 1], out

    def _fill(self, frames: torch.Tensor, out: FaceTrack, lpos: torch.Tensor, rpos: torch.Tensor,
              ldet: FaceTrack, rdet: FaceTrack, gap: torch.Tensor) -> FaceTrack:
        """Interpolate linked intervals, re-detect broken ones, leave faceless ones empty."""
        dev = frames.device
        linked = ldet.valid & rdet.valid & (box_iou_pairs(ldet.boxes, rdet.boxes) >= self.iou)
        broken = (ldet.valid ^ rdet.valid) | (ldet.valid & rdet.valid & ~linked)
        interval = torch.repeat_interleave(torch.arange(len(gap), device=dev), gap)
        first = torch.repeat_interleave(lpos + 1, gap)
        pos = first + torch.arange(len(interval), device=dev) - torch.repeat_interleave(gap.cumsum(0) - gap, gap)
        w = ((pos - torch.repeat_interleave(lpos, gap)).float() / (torch.repeat_interleave(gap, gap) + 1).float())
        lk = linked[interval]
        if bool(lk.any()):
            i, p, wk = interval[lk], pos[lk], w[lk]
            lerp = FaceTrack(
                torch.lerp(ldet.boxes[i], rdet.boxes[i], wk[:, None]),
                torch.lerp(ldet.scores[i], rdet.scores[i], wk),
                torch.lerp(ldet.landmarks[i], rdet.landmarks[i], wk[:, None, None]),
                torch.ones(len(p), dtype=torch.bool, device=dev), torch.zeros(len(p), dtype=torch.bool, device=dev))
            out = _scatter(out, p, lerp)
        bk = broken[interval]
        if bool(bk.any()):
            p = pos[bk]
            out = _scatter(out, p, self._detect(frames[p]))
        return out


def _scatter(out: FaceTrack, pos: torch.Tensor, part: FaceTrack) -> FaceTrack:
    for dst, src in zip(out, part):
        dst[pos] = src.to(dst.dtype)
    return out
