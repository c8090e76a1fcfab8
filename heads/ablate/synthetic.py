"""A tiny synthetic feature cache + Aff-Wild2 EXPR labels with real signal, for ablation tests and the benchmark."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from affcli.cache.store import FeatureStore

EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
EXPR_DIR = "EXPR_Recognition_Challenge"
VISUAL, AUDIO = "clip:synth", "wav2vec2:synth"
PROMPT_SETS = {"expr8": "A face expressing {}", "expr8-photo": "a photo of a {} face"}
TEXT_DIM = 16


def _fingerprint(spec: str, dim: int) -> dict:
    return {"spec": spec, "weights_sha256": "synthetic", "preprocessing": {}, "dim": dim, "dtype": "float16",
            "alignment": "centered", "versions": {}}


def make_synthetic(root: str | Path, n_videos: int = 6, n_frames: int = 90, dims: tuple[int, int] = (16, 12),
                   seed: int = 0, fps: float = 30.0) -> tuple[Path, Path]:
    """Write `root/cache.zarr` (visual + audio sets, two EXPR prompt sets) and `root/labels` (EXPR, 2/3 train,
    1/3 val); returns both paths.

    Labels are piecewise-constant runs of 8 classes; each modality carries a noisy class embedding, so heads learn.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    cache, labels = root / "cache.zarr", root / "labels"
    store = FeatureStore(cache)
    protos = {s: rng.normal(size=(8, d)).astype(np.float32) for s, d in zip((VISUAL, AUDIO), dims)}
    for s, d in zip((VISUAL, AUDIO), dims):
        store.ensure_feature_set(s, _fingerprint(s, d))
    n_val = max(1, n_videos // 3)
    for i in range(n_videos):
        vid = f"video{i:03d}"
        y = np.repeat(rng.integers(0, 8, size=n_frames // 15 + 1), 15)[:n_frames]
        y[rng.random(n_frames) < 0.05] = -1
        split = "Validation_Set" if i >= n_videos - n_val else "Train_Set"
        path = labels / EXPR_DIR / split / f"{vid}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(EXPR_HEADER + "\n" + "\n".join(map(str, y)) + "\n")
        ts = np.arange(n_frames) / fps
        for s, noise in ((VISUAL, 1.0), (AUDIO, 1.5)):
            f = protos[s][np.clip(y, 0, 7)] + noise * rng.normal(size=(n_frames, protos[s].shape[1]))
            valid = np.ones(n_frames, bool)
            store.write_video(s, vid, f.astype(np.float32), valid, ts, fps, f"{vid}.mp4")
    classes = EXPR_HEADER.split(",")
    for name, template in PROMPT_SETS.items():
        emb = rng.normal(size=(len(classes), TEXT_DIM)).astype(np.float32)
        store.write_text_embeddings(name, VISUAL, [template.format(c) for c in classes], emb)
    store.write_manifest()
    return cache, labels
