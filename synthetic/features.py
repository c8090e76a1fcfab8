"""Synthetic features with known structure: in-memory tables for the heads tests and benchmark, and a small
feature cache + EXPR label files for the ablation tests, benchmark and CLI tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from affcli.cache.fingerprint import make_fingerprint
from affcli.cache.store import FeatureStore
from affcli.cache.table import FeatureTable
from affcli.common.vocab import EXPR_CLASSES
from affcli.synthetic.labels import write_label_file

VISUAL, AUDIO = "clip:synth", "wav2vec2:synth"
MODALITY = {VISUAL: "visual", AUDIO: "audio", "ast:synth": "audio"}
PROMPT_SETS = {"expr8": "A face expressing {}", "expr8-photo": "a photo of a {} face"}
TEXT_DIM = 16


def random_table(n_videos: int, n_frames: int | list[int], dims: dict[str, int], seed: int = 0,
                 dtype: np.dtype = np.float32, invalid_p: float = 0.0) -> FeatureTable:
    """Gaussian features for every spec (random invalid frames with probability invalid_p)."""
    rng = np.random.default_rng(seed)
    lens = [n_frames] * n_videos if isinstance(n_frames, int) else list(n_frames)
    per = {}
    for i, n in enumerate(lens):
        per[f"v{i:03d}"] = {s: (rng.standard_normal((n, d)).astype(dtype), rng.random(n) >= invalid_p)
                            for s, d in dims.items()}
    return FeatureTable.from_arrays(per, modality={s: MODALITY[s] for s in dims})


def empty_labels(n: int) -> dict[str, np.ndarray]:
    """Dense label arrays for every task, all masked out."""
    return {"expr": np.zeros(n, np.int64), "mask_expr": np.zeros(n, bool),
            "va": np.zeros((n, 2), np.float32), "mask_va": np.zeros(n, bool),
            "au": np.zeros((n, 12), np.int64), "mask_au": np.zeros(n, bool),
            "lsd": np.zeros(n, np.int64), "mask_lsd": np.zeros(n, bool)}


def random_labels(n: int, seed: int = 0, missing_p: float = 0.1) -> dict[str, np.ndarray]:
    """Random labels for every task with a fraction missing (for smoke runs)."""
    rng = np.random.default_rng(seed)
    lab = empty_labels(n)
    lab["expr"] = rng.integers(0, 8, n)
    lab["va"] = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    lab["au"] = rng.integers(0, 2, (n, 12))
    lab["lsd"] = rng.integers(0, 6, n)
    for k in ("expr", "va", "au", "lsd"):
        lab[f"mask_{k}"] = rng.random(n) >= missing_p
    return lab


def splits_of(table: FeatureTable, n_val: int) -> dict[str, list[str]]:
    """Last n_val videos for validation, the rest for training."""
    return {"train": table.videos[:-n_val], "val": table.videos[-n_val:]}


def sum_sign_task(n_videos: int = 8, n_frames: int = 160, k: int = 6, dim: int = 4, seed: int = 0):
    """Label of frame t = [sum of feature 0 over frames t-k+1..t > 0] (needs several frames); returns table, labels."""
    rng = np.random.default_rng(seed)
    per, ys = {}, []
    for i in range(n_videos):
        x = rng.standard_normal((n_frames, dim)).astype(np.float32)
        c = np.convolve(x[:, 0], np.ones(k), mode="full")[:n_frames]
        ys.append((c > 0).astype(np.int64))
        per[f"v{i:03d}"] = {VISUAL: (x, np.ones(n_frames, bool))}
    table = FeatureTable.from_arrays(per, modality=MODALITY)
    lab = empty_labels(table.n_frames)
    lab["expr"], lab["mask_expr"] = np.concatenate(ys), np.ones(table.n_frames, bool)
    return table, lab


def xor_task(n_videos: int = 8, n_frames: int = 120, dim: int = 4, seed: int = 0, run: int = 5):
    """Label = visual bit XOR audio bit (bits constant over runs of frames, carried by feature 0 of each modality)."""
    rng = np.random.default_rng(seed)
    per, ys = {}, []
    for i in range(n_videos):
        bv = np.repeat(rng.integers(0, 2, n_frames // run + 1), run)[:n_frames]
        ba = np.repeat(rng.integers(0, 2, n_frames // run + 1), run)[:n_frames]
        xv = rng.standard_normal((n_frames, dim)).astype(np.float32) * 0.3
        xa = rng.standard_normal((n_frames, dim)).astype(np.float32) * 0.3
        xv[:, 0] += 2 * bv - 1
        xa[:, 0] += 2 * ba - 1
        ys.append((bv ^ ba).astype(np.int64))
        per[f"v{i:03d}"] = {VISUAL: (xv, np.ones(n_frames, bool)), AUDIO: (xa, np.ones(n_frames, bool))}
    table = FeatureTable.from_arrays(per, modality=MODALITY)
    lab = empty_labels(table.n_frames)
    lab["expr"], lab["mask_expr"] = np.concatenate(ys), np.ones(table.n_frames, bool)
    return table, lab


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
        store.ensure_feature_set(s, make_fingerprint(s, MODALITY[s], d, "synthetic", alignment="centered"))
    n_val = max(1, n_videos // 3)
    for i in range(n_videos):
        vid = f"video{i:03d}"
        y = np.repeat(rng.integers(0, 8, size=n_frames // 15 + 1), 15)[:n_frames]
        y[rng.random(n_frames) < 0.05] = -1
        write_label_file(labels, "expr", "val" if i >= n_videos - n_val else "train", vid, y)
        ts = np.arange(n_frames) / fps
        for s, noise in ((VISUAL, 1.0), (AUDIO, 1.5)):
            f = protos[s][np.clip(y, 0, 7)] + noise * rng.normal(size=(n_frames, protos[s].shape[1]))
            valid = np.ones(n_frames, bool)
            store.write_video(s, vid, f.astype(np.float32), valid, ts, fps, f"{vid}.mp4")
    for name, template in PROMPT_SETS.items():
        emb = rng.normal(size=(len(EXPR_CLASSES), TEXT_DIM)).astype(np.float32)
        store.write_text_embeddings(name, VISUAL, [template.format(c) for c in EXPR_CLASSES], emb)
    store.write_manifest()
    return cache, labels
