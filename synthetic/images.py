"""Synthetic still-image trees (LSD-style class folders) and image-feature caches with latent classes.

`write_image_tree` writes small PNGs whose stripe orientation and tint depend on a latent class, for the
`extract --images-dir` tests and the demo; `latent_class_cache` writes a cache shaped like one extracted from such
a tree with `--views K --augment` (one video per folder, K views per row), whose classes are learnable by
self-supervision, quickly, on a CPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from affcli.cache.fingerprint import make_fingerprint
from affcli.cache.rows import row_extras
from affcli.cache.store import FeatureStore
from affcli.common.vocab import LSD_CLASSES

IMAGE_SPEC = "clip:synth-img"


def write_image_tree(root: str | Path, per_class: int = 6, classes: tuple[str, ...] = LSD_CLASSES[:3], size: int = 40,
                     seed: int = 0, split: str = "train") -> Path:
    """`root/<split>/<CLASS>/img_NNN.png`: stripes at a class angle, a class tint, noise; sizes vary by +-4 px."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Path(root) / split
    for c, name in enumerate(classes):
        folder = base / name
        folder.mkdir(parents=True, exist_ok=True)
        angle = np.pi * c / len(classes)
        tint = np.roll(np.array([200, 60, 60]), c)
        for i in range(per_class):
            h, w = size + rng.integers(-4, 5, 2)
            yy, xx = np.mgrid[0:h, 0:w]
            stripes = 0.5 + 0.5 * np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 0.6 + rng.uniform(0, 6.3))
            img = stripes[..., None] * tint + rng.normal(0, 20, (h, w, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img_{i:03d}.png")
    return base


def latent_class_cache(root: str | Path, n_classes: int = 4, per_folder: int = 96, folders: int = 4, dim: int = 32,
                       views: int = 2, separation: float = 2.5, identity: float = 0.25, nuisance: float = 3.0,
                       noise: float = 0.3, seed: int = 0,
                       text: bool = True) -> tuple[Path, dict[str, np.ndarray]]:
    """Write `root/cache.zarr` (IMAGE_SPEC, `folders` videos of `per_folder` rows, `views` stored views per row, an
    `lsd6` prompt set whose text embeddings sit near the class centres) and return (cache, {video: classes}).

    Each rendering of an image (the row itself and each view) is its class centre + the image's own identity code
    (shared by its renderings) + a fresh large nuisance in a few directions (what augmentation changes) + noise;
    so views teach invariance to the nuisance, and only the (pseudo-)class positives say which images belong together.
    """
    rng = np.random.default_rng(seed)
    cache = Path(root) / "cache.zarr"
    store = FeatureStore(cache)
    store.ensure_feature_set(IMAGE_SPEC, make_fingerprint(IMAGE_SPEC, "visual", dim, "synthetic",
                                                          {"input": "images", "views": views}))
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    centres = separation * q[:n_classes]
    nuis_dirs = q[n_classes:n_classes + 8]
    classes = {}
    for f in range(folders):
        vid = f"train__folder{f}"
        y = rng.integers(0, n_classes, per_folder)
        ident = identity * rng.normal(size=(per_folder, dim))

        def render() -> np.ndarray:
            return (centres[y] + ident + nuisance * rng.normal(size=(per_folder, len(nuis_dirs))) @ nuis_dirs
                    + noise * rng.normal(size=(per_folder, dim)))

        x = render()
        vs = np.stack([render() for _ in range(views)]) if views else None
        paths = [f"folder{f}/img_{i:04d}.png" for i in range(per_folder)]
        store.write_video(IMAGE_SPEC, vid, x.astype(np.float32), np.ones(per_folder, bool),
                          np.arange(per_folder, dtype=np.float64), 1.0, vid, extras=row_extras(paths, vs))
        classes[vid] = y
    if text:
        emb = centres + 0.3 * rng.normal(size=centres.shape)
        store.write_text_embeddings("lsd6", IMAGE_SPEC, [f"class {c}" for c in range(n_classes)], emb.astype(np.float32))
    store.write_manifest()
    return cache, classes
