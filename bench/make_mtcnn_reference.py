"""Make tests/fixtures/mtcnn_reference.npz: facenet-pytorch's own MTCNN(keep_all=True) on real face images.

Runs in a throwaway venv, never in the project's (facenet-pytorch pins an old torch; --no-deps ignores that):
    python3 -m venv /tmp/fnpvenv
    /tmp/fnpvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 pillow numpy scikit-image requests tqdm
    /tmp/fnpvenv/bin/pip install --no-deps facenet-pytorch==2.6.0
    /tmp/fnpvenv/bin/python bench/make_mtcnn_reference.py
Images (all real photographs, offline in scikit-image): `astronaut` (colour, 1 face), `camera` (grey, 1 face),
and four 160x240 grey frames with faces of `lfw_subset` (25x25 crops, upscaled x3 / x4) on a flat background,
one frame holding only non-face LFW patches. The skimage images are stored by name, the LFW frames as uint8.
Stored per detection (image index `image`): `boxes` [K,4] x1,y1,x2,y2, `probs` [K], `landmarks` [K,5,2] x,y.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mtcnn_reference.npz"
LFW_FRAME = (160, 240)
# (lfw_subset index, upscale, top, left) per frame; indices >= 100 are lfw_subset's non-face patches
LFW_LAYOUT = [
    [(0, 4, 30, 20), (1, 3, 40, 150)],
    [(2, 3, 10, 10), (3, 3, 70, 150)],
    [(4, 4, 40, 70)],
    [(105, 4, 30, 20), (150, 3, 40, 150)],
]


def lfw_frames() -> np.ndarray:
    """uint8 [4,160,240] grey frames laid out as LFW_LAYOUT (bilinear upscaling by scikit-image)."""
    from skimage import data, transform

    lfw = data.lfw_subset()
    frames = np.full((len(LFW_LAYOUT), *LFW_FRAME), 128, np.uint8)
    for f, items in enumerate(LFW_LAYOUT):
        for idx, up, top, left in items:
            s = 25 * up
            big = transform.resize(lfw[idx], (s, s), order=1, anti_aliasing=False)
            frames[f, top:top + s, left:left + s] = np.round(big * 255).astype(np.uint8)
    return frames


def rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from importlib import metadata

    import skimage
    import torch
    from facenet_pytorch import MTCNN
    from skimage import data

    torch.set_num_threads(1)
    mtcnn = MTCNN(keep_all=True, device="cpu")
    lfw = lfw_frames()
    images = [data.astronaut(), rgb(data.camera())] + [rgb(f) for f in lfw]
    sources = ["skimage.data.astronaut()", "skimage.data.camera() grey->RGB"] + [
        f"lfw_frames[{i}] grey->RGB" for i in range(len(lfw))]
    image, boxes, probs, marks = [], [], [], []
    for i, im in enumerate(images):
        b, p, lm = mtcnn.detect(im, landmarks=True)
        if b is None:
            continue
        b, p, lm = np.asarray(b, np.float32), np.asarray(p, np.float32), np.asarray(lm, np.float32)
        image += [i] * len(b)
        boxes.append(b), probs.append(p), marks.append(lm)
        print(f"{sources[i]}: {len(b)} face(s), probs {np.round(p, 4).tolist()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out, sources=np.array(sources), lfw_frames=lfw, image=np.array(image, np.int64),
        boxes=np.concatenate(boxes), probs=np.concatenate(probs), landmarks=np.concatenate(marks),
        versions=np.array([f"facenet-pytorch {metadata.version('facenet-pytorch')}", f"torch {torch.__version__}",
                           f"scikit-image {skimage.__version__}"]))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
