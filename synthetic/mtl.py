"""A learnable multi-task dataset with incomplete labels, for the distillation tests and benchmarks: per-frame
features whose EXPR class, VA values and AU bits are fixed linear functions of the features, complete per-video
EXPR/VA/AU label files (what single-task teachers train on) and MTL annotation files in which each task keeps only a
fraction of the train frames (what the student trains on; validation stays fully labelled)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from affcli.cache.fingerprint import make_fingerprint
from affcli.cache.store import FeatureStore
from affcli.common.vocab import AU_NAMES, EXPR_CLASSES
from affcli.synthetic.features import MODALITY, VISUAL
from affcli.synthetic.labels import write_label_file

MTL_FOLDER = "MTL_Challenge"
MTL_FILES = {"train": "training_set_annotations.txt", "val": "validation_set_annotations.txt"}


def mtl_targets(x: np.ndarray, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The true labels of features x [n, d]: expr = argmax(x W), va = tanh(x A / 2), au = [x B > 0]."""
    return {"expr": (x @ weights["expr"]).argmax(1).astype(np.int64),
            "va": np.tanh(x @ weights["va"] / 2).astype(np.float32),
            "au": (x @ weights["au"] > 0).astype(np.int64)}


def _annotation_lines(video: str, lab: dict[str, np.ndarray], keep: dict[str, np.ndarray]) -> list[str]:
    va = np.where(keep["va"][:, None], lab["va"], -5.0)
    ex = np.where(keep["expr"], lab["expr"], -1)
    au = np.where(keep["au"][:, None], lab["au"], -1)
    rows = np.flatnonzero(keep["va"] | keep["expr"] | keep["au"])
    return [f"{video}/{i + 1:05d}.jpg,{va[i, 0]:.4f},{va[i, 1]:.4f},{ex[i]}," + ",".join(map(str, au[i]))
            for i in rows]


def make_mtl_cache(root: str | Path, n_videos: int = 8, n_frames: int = 150, dim: int = 16,
                   label_fraction: float = 0.1, n_val: int = 2, seed: int = 0) -> tuple[Path, Path]:
    """Write `root/cache.zarr` (one visual feature set, VISUAL) and `root/labels` (complete per-video EXPR/VA/AU files
    and MTL annotation files whose train frames keep each task's label with probability `label_fraction`)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    cache, labels = root / "cache.zarr", root / "labels"
    weights = {"expr": rng.normal(size=(dim, len(EXPR_CLASSES))), "va": rng.normal(size=(dim, 2)),
               "au": rng.normal(size=(dim, len(AU_NAMES)))}
    store = FeatureStore(cache)
    store.ensure_feature_set(VISUAL, make_fingerprint(VISUAL, MODALITY[VISUAL], dim, "synthetic-mtl",
                                                      alignment="centered"))
    lines = {"train": [], "val": []}
    for i in range(n_videos):
        vid, split = f"mtl{i:03d}", ("val" if i >= n_videos - n_val else "train")
        x = rng.standard_normal((n_frames, dim)).astype(np.float32)
        lab = mtl_targets(x, weights)
        store.write_video(VISUAL, vid, x, np.ones(n_frames, bool), np.arange(n_frames) / 30.0, 30.0, f"{vid}.mp4")
        for task in ("expr", "va", "au"):
            write_label_file(labels, task, split, vid, lab[task])
        p = 1.0 if split == "val" else label_fraction
        lines[split] += _annotation_lines(vid, lab, {k: rng.random(n_frames) < p for k in lab})
    header = "image,valence,arousal,expression," + ",".join(AU_NAMES)
    for split, rows in lines.items():
        path = labels / MTL_FOLDER / MTL_FILES[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([header, *rows]) + "\n")
    store.write_manifest()
    return cache, labels
