"""Face-detector quality on real photographs: MTCNN (pipeline/mtcnn.py) vs Haar (OpenCV), both the registered
detectors of pipeline/detectors/ that `extract --face` uses.

Inputs (all shipped inside scikit-image, no download): `lfw_subset()` 25x25 grey crops upscaled x4-x6 and pasted
onto a 320x240 grey-noise canvas at a known position (the first 100 are faces, the last 100 non-faces: a box
found on a non-face canvas is a false positive), and the whole photos `astronaut()` (one frontal face) and
`camera()` (the cameraman, a small face turned three-quarters). Figures: detection rate, false-positive rate,
mean IoU of the box against the paste box (the paste box is the LFW crop's outline, not a face annotation:
the IoU measures how a detector's box convention matches that crop), the spread of the 5 landmarks after the
ArcFace alignment (112 template pixels; MTCNN only) and frames/s on this CPU. One table, JSON in bench/results/.

    nice python bench/face_quality.py --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data

from affcli.pipeline.face_align import similarity_transform, template
from affcli.pipeline.detectors import DETECTORS

CANVAS = (240, 320)
N_FACES = 100


def paste_canvases(crops: np.ndarray, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Grey crops [N,25,25] in 0..1 -> frames [N,3,240,320] uint8 on a grey-noise canvas, and the paste boxes [N,4]."""
    rng = np.random.default_rng(seed)
    h, w = CANVAS
    frames = np.clip(rng.normal(128, 12, (len(crops), h, w)), 0, 255).astype(np.uint8)
    boxes = np.zeros((len(crops), 4), np.float32)
    for i, crop in enumerate(crops):
        k = int(rng.integers(4, 7))
        big = np.kron((crop * 255).round().astype(np.uint8), np.ones((k, k), np.uint8))
        s = big.shape[0]
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        frames[i, y:y + s, x:x + s] = big
        boxes[i] = (x, y, x + s, y + s)
    return torch.from_numpy(np.repeat(frames[:, None], 3, 1)), boxes


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of boxes [N,4] (x0,y0,x1,y1)."""
    lt, rb = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])
    return inter / (area(a) + area(b) - inter)


def timed(detector, frames: torch.Tensor, batch: int) -> tuple[tuple[np.ndarray, ...], float]:
    """Run `detector` over frames in batches -> (boxes, scores, landmarks, valid) as arrays, frames/s."""
    parts, t0 = [], time.perf_counter()
    for i in range(0, len(frames), batch):
        parts.append([t.cpu().numpy() for t in detector(frames[i:i + batch])])
    fps = len(frames) / (time.perf_counter() - t0)
    return tuple(np.concatenate(p) for p in zip(*parts)), fps


def landmark_spread(marks: np.ndarray) -> tuple[float, float]:
    """Aligned 5 landmarks of detected faces -> (RMS distance of each point from its mean over faces, RMS distance
    from the ArcFace template), both in 112-template pixels."""
    src = torch.from_numpy(marks).float()
    m = similarity_transform(src, template(112))
    aligned = (torch.cat([src, torch.ones(len(src), 5, 1)], 2) @ m.transpose(1, 2)).numpy()
    spread = np.sqrt(((aligned - aligned.mean(0)) ** 2).sum(2).mean())
    resid = np.sqrt(((aligned - template(112).numpy()) ** 2).sum(2).mean())
    return float(spread), float(resid)


def evaluate(name: str, detector, lfw: torch.Tensor, paste: np.ndarray, photos: dict, batch: int) -> dict:
    """One detector's row of the table."""
    (boxes, _, marks, valid), fps = timed(detector, lfw, batch)
    valid = valid.astype(bool)
    face, nonface = valid[:N_FACES], valid[N_FACES:]
    ious = iou(boxes[:N_FACES][face], paste[:N_FACES][face])
    row = {"detector": name, "detection_rate": float(face.mean()), "false_positive_rate": float(nonface.mean()),
           "mean_iou": float(ious.mean()) if len(ious) else None,
           "iou_ge_0.5": float((ious >= 0.5).sum() / N_FACES), "fps_320x240": fps}
    if np.isfinite(marks[:N_FACES][face]).all() and face.any():
        row["landmark_spread_px"], row["template_residual_px"] = landmark_spread(marks[:N_FACES][face])
    for pname, img in photos.items():
        (pb, _, _, pv), _ = timed(detector, img, 1)
        row[pname] = [round(float(v), 1) for v in pb[0]] if pv[0] else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "face_quality_cpu.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lfw, paste = paste_canvases(data.lfw_subset(), a.seed)
    cam = data.camera()
    photos = {"astronaut_box": torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].contiguous(),
              "camera_box": torch.from_numpy(np.repeat(cam[None, None], 3, 1))}
    detectors = {name: DETECTORS.build(name, "cpu", a.threads) for name in ("mtcnn", "haar")}
    rows = [evaluate(n, d, lfw, paste, photos, a.batch) for n, d in detectors.items()]
    m, h = rows
    if m["astronaut_box"] and h["astronaut_box"]:
        m["astronaut_iou_vs_haar"] = h["astronaut_iou_vs_mtcnn"] = float(
            iou(np.array([m["astronaut_box"]]), np.array([h["astronaut_box"]]))[0])
    cols = ["detection_rate", "false_positive_rate", "mean_iou", "iou_ge_0.5", "landmark_spread_px",
            "template_residual_px", "fps_320x240", "astronaut_box", "camera_box"]
    print("| detector | " + " | ".join(cols) + " |\n" + "|---" * (len(cols) + 1) + "|")
    fmt = lambda v: "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)
    for r in rows:
        print(f"| {r['detector']} | " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    meta = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "canvas": list(CANVAS), "lfw_faces": N_FACES, "lfw_nonfaces": len(lfw) - N_FACES, "seed": a.seed,
            "batch": a.batch}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
