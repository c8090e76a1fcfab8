"""Synthetic feature tables and dense labels with known structure, for tests and the heads benchmark."""
from __future__ import annotations

import numpy as np
import torch

from affcli.cache.table import FeatureTable

VISUAL, AUDIO = "clip:synth", "wav2vec2:synth"


def random_table(n_videos: int, n_frames: int | list[int], dims: dict[str, int], seed: int = 0,
                 dtype: np.dtype = np.float32, invalid_p: float = 0.0) -> FeatureTable:
    """Gaussian features for every spec (random invalid frames with probability invalid_p)."""
    rng = np.random.default_rng(seed)
    lens = [n_frames] * n_videos if isinstance(n_frames, int) else list(n_frames)
    per = {}
    for i, n in enumerate(lens):
        per[f"v{i:03d}"] = {s: (rng.standard_normal((n, d)).astype(dtype), rng.random(n) >= invalid_p)
                            for s, d in dims.items()}
    return FeatureTable.from_arrays(per)


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
    table = FeatureTable.from_arrays(per)
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
    table = FeatureTable.from_arrays(per)
    lab = empty_labels(table.n_frames)
    lab["expr"], lab["mask_expr"] = np.concatenate(ys), np.ones(table.n_frames, bool)
    return table, lab


def affwild_sized(scale: float = 1.0, dims: tuple[int, ...] = (512, 768, 768), frames_per_video: int = 5000,
                  seed: int = 0) -> tuple[FeatureTable, dict[str, np.ndarray], dict[str, list[str]]]:
    """An Aff-Wild2-sized float16 table (about 2.6M train + 0.3M val frames at scale 1) with random EXPR labels."""
    n_total = max(2, int(round(2.9e6 * scale / frames_per_video)))
    n_frames = max(64, int(min(frames_per_video, 2.9e6 * scale / n_total)))
    specs = dict(zip(("clip:synth", "wav2vec2:synth", "ast:synth"), dims))
    rng = np.random.default_rng(seed)
    T = n_total * n_frames
    feats = {s: torch.from_numpy(rng.standard_normal((T, d), dtype=np.float32).astype(np.float16)) for s, d in specs.items()}
    valid = {s: torch.ones(T, dtype=torch.bool) for s in specs}
    lens = np.full(n_total, n_frames, np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    videos = [f"v{i:05d}" for i in range(n_total)]
    table = FeatureTable(videos, starts, lens, feats, valid, torch.zeros(T, dtype=torch.float64), {})
    lab = empty_labels(T)
    lab["expr"], lab["mask_expr"] = rng.integers(0, 8, T), np.ones(T, bool)
    n_val = max(1, n_total // 10)
    return table, lab, {"train": videos[:-n_val], "val": videos[-n_val:]}
