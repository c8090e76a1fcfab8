"""Seeded Gaussian input noise for robustness evaluation, as the field reports it: sigma = level x the cloud's
radius (max distance from its centroid), e.g. levels 0.01 and 0.02 (1% and 2%)."""

from __future__ import annotations

import math
import zlib

import numpy as np

from affcli.pointcloud.errors import PointCloudError

MAX_LEVEL = 0.5


def parse_levels(text: str | float | list) -> list[float]:
    """Noise levels from '0.01,0.02' (or a number / list): finite, 0 <= level <= MAX_LEVEL, no duplicates, in the
    order given; a one-line PointCloudError otherwise."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    levels = []
    for item in items:
        item = str(item).strip()
        try:
            v = float(item)
        except ValueError:
            raise PointCloudError(f"noise level {item!r} is not a number: give e.g. --noise 0.01,0.02") from None
        if not math.isfinite(v) or not 0 <= v <= MAX_LEVEL:
            raise PointCloudError(f"noise level {item!r} out of range: need 0 <= level <= {MAX_LEVEL:g} (x radius)")
        if v in levels:
            raise PointCloudError(f"noise level {item!r} given twice")
        levels.append(v)
    if not levels:
        raise PointCloudError("no noise level given: e.g. --noise 0.01,0.02")
    return levels


def add_noise(xyz: np.ndarray, level: float, name: str = "", seed: int = 0) -> np.ndarray:
    """xyz [N,3] plus Gaussian noise of sigma = level x radius (float32); the same (name, level, seed) always gives
    the same noise, so every method of a table sees the same noisy input."""
    xyz = np.asarray(xyz, np.float32)
    if level == 0:
        return xyz.copy()
    radius = float(np.linalg.norm(xyz - xyz.mean(0), axis=1).max())
    key = zlib.crc32(f"{name}|{level!r}|{seed}".encode())
    noise = np.random.default_rng(key).standard_normal(xyz.shape) * (level * radius)
    return (xyz + noise).astype(np.float32)
