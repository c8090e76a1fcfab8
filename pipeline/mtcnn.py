"""MTCNN face detector (P-, R-, O-Net) with the pretrained weights of the MIT `facenet-pytorch` wheel, batched.

The three state dicts `facenet_pytorch/data/{pnet,rnet,onet}.pt` are read with `torch.load(weights_only=True)`
straight from the wheel (fetched once by `wheel_weights`, or $AFFCLI_MTCNN_WHEEL); facenet_pytorch is never
imported. The cascade follows facenet-pytorch's `detect_face` step for step, but every stage runs on all frames
of a batch at once: each pyramid scale is one P-Net call over the batch, R-/O-Net see every candidate crop of
the batch together, NMS is grouped by frame index. Crops are area resampling (facenet's `interpolate(mode="area")`)
computed for all boxes at once from per-frame integral images, so the nets see the inputs they were run with.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from affcli.pipeline.wheel_weights import fetch_wheel, read_member

MTCNN_PACKAGE = "facenet-pytorch"
MTCNN_VERSION = "2.6.0"
MTCNN_ENV = "AFFCLI_MTCNN_WHEEL"
MTCNN_MEMBERS = {net: f"facenet_pytorch/data/{net}.pt" for net in ("pnet", "rnet", "onet")}


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 windows at stride 2 -> (box offsets [N,4,h,w], face prob [N,h,w])."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)[:, 1]


class RNet(nn.Module):
    """Refinement net on 24x24 crops -> (box offsets [K,4], face prob [K])."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)  # Caffe's flatten order
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output net on 48x48 crops -> (box offsets [K,4], landmarks [K,10] x1..x5,y1..y5 in the crop, face prob [K])."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)[:, 1]


def mtcnn_wheel(source: str | os.PathLike | None = None) -> Path:
    """The facenet-pytorch wheel: `source`, $AFFCLI_MTCNN_WHEEL, the user cache, or a logged `pip download`."""
    return fetch_wheel(MTCNN_PACKAGE, MTCNN_VERSION, source=source, env_var=MTCNN_ENV, subdir="mtcnn",
                       why="MTCNN face detector weights")


def load_mtcnn_state(source: str | os.PathLike | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """{"pnet"|"rnet"|"onet": state dict} read with `torch.load(weights_only=True)` from inside the wheel."""
    wheel = mtcnn_wheel(source)
    return {net: torch.load(io.BytesIO(read_member(wheel, member)), map_location="cpu", weights_only=True)
            for net, member in MTCNN_MEMBERS.items()}


class Faces(NamedTuple):
    """Faces of one frame: boxes [k,4] (x1,y1,x2,y2 pixels), scores [k], landmarks [k,5,2] (x,y: eyes, nose, mouth)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor


class Detections(NamedTuple):
    """All faces of a batch, flat: frame index [K], boxes [K,4], scores [K], landmarks [K,5,2]; largest first."""

    frame: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor
    n_frames: int

    def per_frame(self) -> list[Faces]:
        counts = torch.bincount(self.frame, minlength=self.n_frames).tolist()
        parts = (t.split(counts) for t in (self.boxes, self.scores, self.landmarks))
        return [Faces(*p) for p in zip(*parts)]


class LargestFace(NamedTuple):
    """One face per frame: boxes [N,4], scores [N], landmarks [N,5,2] (NaN where `valid` [N] is False)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor
    valid: torch.Tensor


def as_nchw_uint8(frames: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 frames [N,H,W,3] or [N,3,H,W] (tensor on any device, or array) -> [N,3,H,W] uint8 on `device`."""
    x = torch.as_tensor(frames)
    if x.ndim != 4 or x.dtype != torch.uint8 or 3 not in (x.shape[1], x.shape[-1]):
        raise ValueError(f"mtcnn: expected uint8 frames [N,H,W,3] or [N,3,H,W], got {x.dtype} {tuple(x.shape)}")
    x = x.to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2) if x.shape[-1] == 3 else x


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """facenet's scale pyramid: 12/min_face_size, shrunk by `factor` while the short side stays >= 12 px."""
    scale, minl, scales = 12.0 / min_face_size, min(height, width) * 12.0 / min_face_size, []
    while minl >= 12:
        scales.append(scale)
        scale, minl = scale * factor, minl * factor
    return scales


def integral_image(frames: torch.Tensor) -> torch.Tensor:
    """Zero-padded summed-area table [N,H+1,W+1,3] of uint8 frames [N,3,H,W] (int32 while it cannot overflow)."""
    n, _, h, w = frames.shape
    dtype = torch.int32 if 255 * h * w < 2**31 else torch.int64
    s = frames.permute(0, 2, 3, 1).to(dtype).cumsum(1).cumsum(2)
    return F.pad(s, (0, 0, 1, 0, 1, 0))


def area_crops(table: torch.Tensor, frame: torch.Tensor, rect: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel rectangles rect [K,4] (x0,y0,x1,y1 integer, end exclusive) of frames `frame` [K] resized to size x size.

    Each output pixel is the mean over the input pixels of its adaptive-average-pooling bin, i.e. exactly
    `F.interpolate(crop, (size, size), mode="area")`, for all K crops at once; returns float [K,3,size,size].
    """
    i = torch.arange(size, device=rect.device)
    x0, y0, x1, y1 = rect.long().unbind(1)
    lw, lh = (x1 - x0)[:, None], (y1 - y0)[:, None]
    c0, c1 = x0[:, None] + (i * lw) // size, x0[:, None] + ((i + 1) * lw + size - 1) // size
    r0, r1 = y0[:, None] + (i * lh) // size, y0[:, None] + ((i + 1) * lh + size - 1) // size
    n, r0, r1, c0, c1 = frame[:, None, None], r0[:, :, None], r1[:, :, None], c0[:, None, :], c1[:, None, :]
    total = table[n, r1, c1] - table[n, r0, c1] - table[n, r1, c0] + table[n, r0, c0]
    return (total.to(torch.float32) / ((r1 - r0) * (c1 - c0))[..., None].to(torch.float32)).permute(0, 3, 1, 2)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """facenet's `rerec`: the square of side max(w, h) with the same centre."""
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    side = wh.max(1, keepdim=True).values
    top_left = boxes[:, 0:2] + wh * 0.5 - side * 0.5
    return torch.cat([top_left, top_left + side], 1)


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """facenet's `bbreg`: offsets in units of the (+1) box size."""
    wh = (boxes[:, 2:4] - boxes[:, 0:2] + 1).repeat(1, 2)
    return boxes + reg * wh


def _clipped_rect(boxes: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """facenet's `pad` + slicing: the truncated box clipped to the frame as an end-exclusive rect, and its validity."""
    b = boxes.trunc().long()
    x0, y0 = b[:, 0].clamp(min=1) - 1, b[:, 1].clamp(min=1) - 1
    x1, y1 = b[:, 2].clamp(max=width), b[:, 3].clamp(max=height)
    rect = torch.stack([x0, y0, x1, y1], 1)
    ok = (x1 > x0) & (y1 > y0)
    return torch.where(ok[:, None], rect, torch.tensor([0, 0, 1, 1], device=rect.device)), ok


def nms_min(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS per group with overlap = intersection / smaller area (+1 pixel convention), as facenet's O-Net stage.

    Exact greedy result without a Python loop over boxes: keep[j] = no kept higher-scored box overlaps j, solved by
    fixed-point iteration (the first t entries are final after t rounds; in practice 2-3 rounds).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b, g = boxes[order], groups[order]
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    lt, rb = torch.maximum(b[:, None, :2], b[None, :, :2]), torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt + 1).clamp(min=0).prod(2)
    over = inter / torch.minimum(area[:, None], area[None, :]) > threshold
    k = len(order)
    suppress = over & (g[:, None] == g[None, :]) & torch.ones(k, k, dtype=torch.bool, device=b.device).triu(1)
    keep = torch.ones(k, dtype=torch.bool, device=b.device)
    for _ in range(k):
        new = ~(suppress & keep[:, None]).any(0)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


class MTCNN(nn.Module):
    """facenet-pytorch's MTCNN cascade, batched over frames; CPU or CUDA.

    A frame's faces never depend on the other frames of its batch (so `stream`, detecting one frame at a time, finds
    what extraction found): P-Net sees one frame per call, R-/O-Net see one frame's candidates per call, in calls of
    exactly `crop_batch` crops (the last padded): a kernel rounds a row the same for the same shape and position.
    """

    def __init__(self, device: str | torch.device = "cpu", min_face_size: float = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 weights: str | os.PathLike | None = None, crop_batch: int = 16):
        super().__init__()
        if min_face_size <= 0 or not 0 < factor < 1 or len(thresholds) != 3:
            raise ValueError(f"mtcnn: bad options min_face_size={min_face_size} factor={factor} "
                             f"thresholds={thresholds}")
        self.min_face_size, self.factor = float(min_face_size), float(factor)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.crop_batch = int(crop_batch)
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        state = load_mtcnn_state(weights)
        for net in ("pnet", "rnet", "onet"):
            getattr(self, net).load_state_dict(state[net])
        self.device = torch.device(device)
        self.to(self.device).eval().requires_grad_(False)

    @torch.inference_mode()
    def detect(self, frames: torch.Tensor | np.ndarray) -> list[Faces]:
        """Per frame: boxes [k,4], scores [k], landmarks [k,5,2] (largest face first), on the model's device."""
        return self.detect_flat(frames).per_frame()

    @torch.inference_mode()
    def largest_face(self, frames: torch.Tensor | np.ndarray) -> LargestFace:
        """The largest face of each frame (facenet's `select_largest`); NaN and valid=False where there is none."""
        d = self.detect_flat(frames)
        first = torch.ones_like(d.frame, dtype=torch.bool)
        first[1:] = d.frame[1:] != d.frame[:-1]
        n, dev = d.n_frames, self.device
        boxes = torch.full((n, 4), float("nan"), device=dev)
        scores = torch.full((n,), float("nan"), device=dev)
        marks = torch.full((n, 5, 2), float("nan"), device=dev)
        idx = d.frame[first]
        boxes[idx], scores[idx], marks[idx] = d.boxes[first], d.scores[first], d.landmarks[first]
        valid = torch.zeros(n, dtype=torch.bool, device=dev)
        valid[idx] = True
        return LargestFace(boxes, scores, marks, valid)

    @torch.inference_mode()
    def detect_flat(self, frames: torch.Tensor | np.ndarray) -> Detections:
        """All faces of the batch as flat tensors with their frame index, sorted by frame, then area descending."""
        imgs = as_nchw_uint8(frames, self.device).contiguous()  # one memory layout: kernels round by layout too
        n, _, h, w = imgs.shape
        boxes, frame = self._propose(imgs)
        table = integral_image(imgs) if len(boxes) else None
        if len(boxes):
            boxes, frame = self._refine(table, boxes, frame, w, h)
        marks = torch.zeros(0, 5, 2, device=self.device)
        scores = torch.zeros(0, device=self.device)
        if len(boxes):
            boxes, scores, marks, frame = self._output(table, boxes, frame, w, h)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = torch.sort(-area, stable=True).indices
        order = order[torch.sort(frame[order], stable=True).indices]
        return Detections(frame[order], boxes[order, :4], scores[order], marks[order], n)

    def _propose(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over the scale pyramid, one frame per call -> square candidates [K,4], frame [K]."""
        n, _, h, w = imgs.shape
        found, frames = [], []
        for scale in pyramid_scales(h, w, self.min_face_size, self.factor):
            hs, ws = int(h * scale + 1), int(w * scale + 1)
            for i in range(n):
                x = F.interpolate(imgs[i:i + 1].float(), size=(hs, ws), mode="area")
                reg, prob = self.pnet(_normalise(x))
                cand, idx = _windows(reg, prob, scale, self.thresholds[0])
                keep = batched_nms(cand[:, :4], cand[:, 4], idx, 0.5)
                found.append(cand[keep])
                frames.append(idx[keep] + i)
        if not found:
            return torch.zeros(0, 9, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device)
        cand, frame = torch.cat(found), torch.cat(frames)
        keep = batched_nms(cand[:, :4], cand[:, 4], frame, 0.7)
        cand, frame = cand[keep], frame[keep]
        wh = (cand[:, 2:4] - cand[:, 0:2]).repeat(1, 2)
        return _square(cand[:, :4] + cand[:, 5:9] * wh), frame

    def _net_on_crops(self, net: nn.Module, table: torch.Tensor, boxes: torch.Tensor, frame: torch.Tensor,
                      size: int, w: int, h: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        rect, ok = _clipped_rect(boxes, w, h)
        c, parts, where = self.crop_batch, [], []
        for f in torch.unique(frame).tolist():  # each frame's candidates alone, in calls of one shape
            idx = (frame == f).nonzero().flatten()
            for i in range(0, len(idx), c):
                sel = idx[i:i + c]
                x = area_crops(table, frame[sel], rect[sel], size)
                k = len(x)
                if k < c:  # a candidate's outputs depend neither on how many others there are nor on their frames
                    x = torch.cat([x, x.new_zeros(c - k, *x.shape[1:])])
                parts.append(tuple(o[:k] for o in net(_normalise(x))))
                where.append(sel)
        order = torch.argsort(torch.cat(where))
        return tuple(torch.cat(o)[order] for o in zip(*parts)), ok

    def _refine(self, table: torch.Tensor, boxes: torch.Tensor, frame: torch.Tensor, w: int, h: int):
        """R-Net on 24x24 crops of all candidates: threshold, NMS per frame, regress, square."""
        (reg, prob), ok = self._net_on_crops(self.rnet, table, boxes, frame, 24, w, h)
        keep = ok & (prob > self.thresholds[1])
        boxes, prob, reg, frame = boxes[keep], prob[keep], reg[keep], frame[keep]
        pick = batched_nms(boxes, prob, frame, 0.7)
        return _square(_regress(boxes[pick], reg[pick])), frame[pick]

    def _output(self, table: torch.Tensor, boxes: torch.Tensor, frame: torch.Tensor, w: int, h: int):
        """O-Net on 48x48 crops: threshold, landmarks in frame pixels, regress, NMS (overlap over the smaller box)."""
        (reg, pts, prob), ok = self._net_on_crops(self.onet, table, boxes, frame, 48, w, h)
        keep = ok & (prob > self.thresholds[2])
        boxes, reg, pts, prob, frame = boxes[keep], reg[keep], pts[keep], prob[keep], frame[keep]
        wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
        marks = torch.stack([pts[:, :5], pts[:, 5:]], 2) * wh[:, None, :] + boxes[:, None, 0:2] - 1
        boxes = _regress(boxes, reg)
        pick = nms_min(boxes, prob, frame, 0.7)
        return boxes[pick], prob[pick], marks[pick], frame[pick]


def _windows(reg: torch.Tensor, prob: torch.Tensor, scale: float,
             threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """facenet's `generateBoundingBox`: P-Net cells over threshold -> [K,9] (x1,y1,x2,y2,score,4 offsets), frame [K]."""
    mask = prob >= threshold
    where = mask.nonzero()
    xy = where[:, 1:].to(reg.dtype).flip(1)
    q1, q2 = ((2 * xy + 1) / scale).floor(), ((2 * xy + 12) / scale).floor()
    offsets = reg.permute(0, 2, 3, 1)[mask]
    return torch.cat([q1, q2, prob[mask][:, None], offsets], 1), where[:, 0]
