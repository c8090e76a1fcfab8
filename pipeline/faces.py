"""Offline face cropping: OpenCV's bundled Haar cascade finds the largest face; a square crop with margin is resized.

Crops are square, centred on the detected box, side = box side * (1 + 2 * margin), zero-padded where they
leave the frame. Frames without a face give zeros and valid=False (kept, so frame indices never shift).
The staged `extract` uses the device-side part at the end: detector adapters (MTCNN, Haar) for
pipeline/tracking.py, `face_crops` (aligned or box) and `letterbox`, all on torch tensors.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

CASCADE = "haarcascade_frontalface_default.xml"


class FaceCropper:
    """Largest-face square crops for batches of RGB frames, detection threaded over the frames of a batch."""

    def __init__(
        self,
        size: int = 224,
        margin: float = 0.25,
        detect_width: int = 320,
        min_face: float = 0.08,
        threads: int = 2,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        detect_every: int = 1,
    ):
        if size < 1 or detect_width < 32 or margin < 0 or not 0 <= min_face < 1 or threads < 1:
            raise ValueError(
                f"bad FaceCropper options: size={size} margin={margin} detect_width={detect_width} "
                f"min_face={min_face} threads={threads}"
            )
        self.size, self.margin, self.detect_width, self.min_face = (
            int(size),
            float(margin),
            int(detect_width),
            float(min_face),
        )
        self.threads, self.scale_factor, self.min_neighbors = int(threads), float(scale_factor), int(min_neighbors)
        self.detect_every = max(1, int(detect_every))
        self._cascade_path = str(Path(cv2.data.haarcascades) / CASCADE)
        if cv2.CascadeClassifier(self._cascade_path).empty():
            raise RuntimeError(f"{self._cascade_path}: OpenCV could not load its bundled Haar cascade")
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None

    def fingerprint(self) -> dict:
        """The preprocessing parameters that change the crops, for the feature-cache fingerprint."""
        return {
            "face_detector": f"opencv-haar:{CASCADE}",
            "opencv": cv2.__version__,
            "size": self.size,
            "margin": self.margin,
            "detect_width": self.detect_width,
            "min_face": self.min_face,
            "scale_factor": self.scale_factor,
            "min_neighbors": self.min_neighbors,
            "detect_every": self.detect_every,
            "crop": "square, largest face, zero padded",
        }

    def _classifier(self) -> cv2.CascadeClassifier:
        clf = getattr(self._local, "clf", None)
        if clf is None:
            clf = self._local.clf = cv2.CascadeClassifier(self._cascade_path)
        return clf

    def detect(self, frame: np.ndarray) -> np.ndarray | None:
        """Largest face box (x0, y0, x1, y1) in pixels of `frame` (RGB), or None."""
        h, w = frame.shape[:2]
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.detect_width / w)
        if scale < 1.0:
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        min_side = max(20, int(self.min_face * min(grey.shape)))
        found = self._classifier().detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
        )
        if len(found) == 0:
            return None
        x, y, bw, bh = np.asarray(found, np.float32)[np.argmax(found[:, 2] * found[:, 3])]
        return np.array([x, y, x + bw, y + bh], np.float32) / scale

    def crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Square crop of `frame` around `box` with the margin, zero-padded at the borders, resized to size x size."""
        h, w = frame.shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * self.margin)
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        s = max(1, int(round(side)))
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
        square = np.zeros((s, s, 3), np.uint8)
        if fx1 > fx0 and fy1 > fy0:
            square[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] = frame[fy0:fy1, fx0:fx1]
        interp = cv2.INTER_AREA if s > self.size else cv2.INTER_LINEAR
        return cv2.resize(square, (self.size, self.size), interpolation=interp)

    def crop_batch(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 [B,H,W,3] RGB -> (crops uint8 [B,size,size,3], valid bool [B], boxes float32 [B,4] NaN if none).

        A box is the detected face (x0, y0, x1, y1) in pixels of the input frame, before the margin. With
        `detect_every` k > 1 the detector runs on every k-th frame of the batch and the k-1 frames after it
        reuse its box (a speed/accuracy trade for long videos where faces move slowly).
        """
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [B,H,W,3], got {frames.dtype} {frames.shape}")
        b = len(frames)
        crops = np.zeros((b, self.size, self.size, 3), np.uint8)
        valid = np.zeros(b, bool)
        boxes = np.full((b, 4), np.nan, np.float32)
        k = self.detect_every
        keys = np.arange(0, b, k)
        if self.threads > 1 and len(keys) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="facecrop")
            found = list(self._pool.map(self.detect, frames[keys]))
        else:
            found = [self.detect(f) for f in frames[keys]]
        for j, box in enumerate(found):
            if box is None:
                continue
            for i in range(keys[j], min(keys[j] + k, b)):
                crops[i], valid[i], boxes[i] = self.crop(frames[i], box), True, box
        return crops, valid, boxes

    def close(self) -> None:
        """Stop the worker threads (also done when the cropper is garbage-collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> FaceCropper:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_local"], state["_pool"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()


def whole_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """`--no-face`: letterbox whole frames [B,H,W,3] into size x size (aspect kept, zero bars), no content cut off."""
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


# ---- device-side detection and crops (the staged pipeline) ----------------------------------------------------
FACE_MODES = ("mtcnn", "haar", "none")


class HaarDetector:
    """Tracker detector over FaceCropper.detect: frames [M,3,H,W] uint8 (any device) -> largest box per frame, no
    landmarks (NaN), score 1 where found; detection runs on the host, threaded over the frames."""

    def __init__(self, cropper: FaceCropper):
        self.cropper = cropper

    def fingerprint(self) -> dict:
        fp = self.cropper.fingerprint()
        return {k: v for k, v in fp.items() if k not in ("size", "crop")}

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        host = np.ascontiguousarray(frames.permute(0, 2, 3, 1).cpu().numpy())
        c = self.cropper
        if c.threads > 1 and len(host) > 1:
            if c._pool is None:
                c._pool = ThreadPoolExecutor(c.threads, thread_name_prefix="facecrop")
            found = list(c._pool.map(c.detect, host))
        else:
            found = [c.detect(f) for f in host]
        boxes = np.stack([np.full(4, np.nan, np.float32) if b is None else b for b in found]) if found else \
            np.zeros((0, 4), np.float32)
        valid = torch.from_numpy(np.isfinite(boxes).all(1))
        n = len(boxes)
        return (torch.from_numpy(boxes), valid.float(), torch.full((n, 5, 2), float("nan")), valid)


class MtcnnDetector:
    """Tracker detector over MTCNN.largest_face, on the frames' device; frames wider than `detect_width` are
    area-downscaled for detection and the boxes / landmarks scaled back to frame pixels."""

    def __init__(self, mtcnn, detect_width: int = 640):
        self.mtcnn, self.detect_width = mtcnn, int(detect_width)

    def fingerprint(self) -> dict:
        return {**self.mtcnn.fingerprint(), "detect_width": self.detect_width}

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = frames.shape[-2:]
        scale = min(1.0, self.detect_width / w)
        x = frames.to(self.mtcnn.device, non_blocking=True)
        if scale < 1.0:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = F.interpolate(x.float(), size=size, mode="area").round_().clamp_(0, 255).to(torch.uint8)
        f = self.mtcnn.largest_face(x)
        return f.boxes / scale, torch.nan_to_num(f.scores, nan=0.0), f.landmarks / scale, f.valid


def letterbox(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Whole frames [N,3,H,W] uint8 -> [N,3,size,size] uint8, aspect kept, zero bars (`--face none`), on their device."""
    n, _, h, w = frames.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = frames.new_zeros(n, 3, size, size)
    if n:
        x = F.interpolate(frames.float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (size - nh) // 2, (size - nw) // 2
        out[:, :, top:top + nh, left:left + nw] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def face_crops(frames: torch.Tensor, boxes: torch.Tensor, landmarks: torch.Tensor, valid: torch.Tensor, size: int,
               align: bool, margin: float) -> torch.Tensor:
    """Crops [N,3,size,size] uint8 of frames [N,3,H,W]: landmark-aligned to the ArcFace template where `align` and
    landmarks exist, else square box crops with `margin`; zeros where `valid` is False. All on the frames' device."""
    from affcli.pipeline.face_align import align_faces, box_crops

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
