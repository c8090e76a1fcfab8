"""Frames -> square uint8 crops: face crops (aligned or box), letterboxed whole frames, and square resizes.

Device-side (torch, the frames' device) for the staged `extract` and `stream`; `whole_frames` is the host letterbox
of still images. Every function keeps the batch: one op per batch, no per-frame Python.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from affcli.pipeline.face_align import align_faces, box_crops
from affcli.pipeline.strips import resize_aa


def float_chunks(frames: torch.Tensor, max_bytes: int | None) -> list[slice]:
    """Consecutive slices of `frames` [N,...] whose float32 copies take at most `max_bytes` (at least one frame each;
    all of them at once when `max_bytes` is None): a 4K batch is made float a frame or two at a time."""
    n = len(frames)
    if max_bytes is None or n == 0:
        return [slice(0, n)]
    per = 4 * max(1, frames[0].numel())
    step = max(1, int(max_bytes) // per)
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def chunked(fn, frames: torch.Tensor, max_bytes: int | None, *per_frame: torch.Tensor) -> torch.Tensor:
    """`fn(frames[s], *(a[s] for a in per_frame))` over `float_chunks`, concatenated: `fn` works frame by frame, so
    the result is the one-call result while the float work stays within `max_bytes`."""
    parts = [fn(frames[s], *(a[s] for a in per_frame)) for s in float_chunks(frames, max_bytes)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N,3,H,W] -> [N,3,size,size] (bilinear, antialiased), on their device; unchanged when already that size."""
    if frames.shape[-2:] == (size, size):
        return frames
    x = F.interpolate(frames.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def resize_batch(crops: np.ndarray, size: int) -> np.ndarray:
    """Host crops uint8 [B,S,S,3] -> [B,size,size,3] by `resize_frames` (another backbone's input size)."""
    if crops.shape[1] == size:
        return crops
    t = resize_frames(torch.from_numpy(crops).permute(0, 3, 1, 2), size)
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def letterbox(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Whole frames [N,3,H,W] uint8 -> [N,3,size,size] uint8, aspect kept, zero bars (`--face none`), on their
    device; resized in row strips (`strips.resize_aa`), so no whole-frame float copy."""
    n, _, h, w = frames.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = frames.new_zeros(n, 3, size, size)
    if n:
        x = resize_aa(frames, (nh, nw))  # row strips: no whole-frame float copy
        top, left = (size - nh) // 2, (size - nw) // 2
        out[:, :, top:top + nh, left:left + nw] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def whole_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Still images: letterbox host frames [B,H,W,3] into size x size (aspect kept, zero bars), OpenCV area resize."""
    b, h, w = frames.shape[:3]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.zeros((b, size, size, 3), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    view = out[:, top : top + nh, left : left + nw]
    for i in range(b):  # OpenCV's area resize takes one image per call (about 1 ms for 640x360)
        view[i] = cv2.resize(frames[i], (nw, nh), interpolation=interp)
    return out


def face_crops(frames: torch.Tensor, boxes: torch.Tensor, landmarks: torch.Tensor, valid: torch.Tensor, size: int,
               align: bool, margin: float) -> torch.Tensor:
    """Crops [N,3,size,size] uint8 of frames [N,3,H,W]: landmark-aligned to the ArcFace template where `align` and
    landmarks exist, else square box crops with `margin`; zeros where `valid` is False. All on the frames' device."""
    dev = frames.device
    valid = valid.to(dev)
    out = frames.new_zeros(len(frames), 3, size, size)
    marks = landmarks.to(dev)
    use_align = valid & torch.isfinite(marks).all(2).all(1) if align else torch.zeros_like(valid)
    use_box = valid & ~use_align
    for sel, crop in ((use_align, lambda i: align_faces(frames, marks[i], size, frame_index=i)[0]),
                      (use_box, lambda i: box_crops(frames, boxes.to(dev)[i], size, margin, frame_index=i))):
        idx = sel.nonzero().flatten()
        if len(idx):
            out[idx] = crop(idx).round_().clamp_(0, 255).to(torch.uint8)
    return out
