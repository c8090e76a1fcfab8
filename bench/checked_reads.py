"""Cost of checked reads: `load_table` with its per-video checksum and fingerprint checks vs without, vs a raw
numpy read of the same shard files (warm page cache, best of `--repeat`).

    python bench/checked_reads.py --videos 20 --frames 5000 --dim 768 [--threads 4]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from affcli.cache import bulk, load_table
from affcli.cache.fingerprint import make_fingerprint
from affcli.cache.store import FeatureStore

SPEC = "bench:feats"


def build(root: Path, videos: int, frames: int, dim: int) -> Path:
    """A cache of one feature set: `videos` x `frames` random float16 rows of width `dim`."""
    store = FeatureStore(root / "c.zarr")
    store.ensure_feature_set(SPEC, make_fingerprint(SPEC, "visual", dim, "bench"))
    rng = np.random.default_rng(0)
    for i in range(videos):
        feats = rng.standard_normal((frames, dim), dtype=np.float32)
        store.write_video(SPEC, f"v{i:04d}", feats, np.ones(frames, bool), np.arange(frames) / 30.0, 30.0)
    return root / "c.zarr"


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = build(Path(tmp), args.videos, args.frames, args.dim)
        shards = sorted(p for p in cache.rglob("feats/c/*/*") if p.is_file())
        nbytes = args.videos * args.frames * args.dim * 2
        raw = best(lambda: [np.fromfile(p, np.uint8) for p in shards], args.repeat)
        checked = best(lambda: load_table(cache, [SPEC], threads=args.threads), args.repeat)
        with mock.patch.object(bulk._VideoReader, "_check", lambda *a: None):
            plain = best(lambda: load_table(cache, [SPEC], threads=args.threads), args.repeat)
    gb = nbytes / 1e9
    print(f"{gb:.2f} GB feats ({args.videos} videos x {args.frames} x {args.dim} f16), threads {args.threads}: "
          f"raw numpy {gb / raw:.2f} GB/s, load_table unchecked {gb / plain:.2f} GB/s, checked {gb / checked:.2f} GB/s "
          f"(checked/raw {raw / checked:.2f}, checked/unchecked {plain / checked:.2f})")


if __name__ == "__main__":
    main()
