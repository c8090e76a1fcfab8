"""Benchmark: `affcli stream` per-frame latency (p50/p99) and frames/s: decode, face crop + backbone, causal head.

A synthetic face video is extracted once (to get the cache fingerprints stream rebuilds its backbone and face stage
from), then streamed frame by frame through a causal head (untrained: latency does not depend on the weights).

    python bench/stream.py --device cpu --backbone clip:tiny --face mtcnn --out results.json
    python bench/stream.py --device cuda --backbone clip:ViT-B-16/random --face mtcnn --frames 600 --out results.json
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from affcli.common.device import resolve_device
from affcli.heads.config import ModelSpec
from affcli.heads.infer.online import OnlineHead
from affcli.heads.model.head import HeadModel
from affcli.pipeline.config import ExtractConfig
from affcli.pipeline.extract import run_extract
from affcli.serve.features import FrameFeaturizer
from affcli.serve.stream import frame_source
from affcli.synthetic.media import write_test_video


def pct(a: list[float]) -> dict[str, float]:
    """p50 / p99 / mean of per-frame milliseconds, leaving out the first (warm-up) frame."""
    x = np.asarray(a[1:] if len(a) > 1 else a, np.float64)
    return {"p50_ms": float(np.percentile(x, 50)), "p99_ms": float(np.percentile(x, 99)), "mean_ms": float(x.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="clip:tiny")
    ap.add_argument("--face", default="mtcnn", help="A registered face detector (mtcnn, haar, none, ...).")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--size", default="640x360", help="Video width x height.")
    ap.add_argument("--temporal", default="gru(hidden=256)")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    dev = resolve_device(a.device)
    w, h = (int(v) for v in a.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        video = write_test_video(Path(tmp) / "v.mp4", a.frames, 30.0, (w, h))
        cache = Path(tmp) / "c.zarr"
        res = run_extract(ExtractConfig(cache=cache, backbones=[a.backbone], video_dir=Path(tmp), device=str(dev),
                                        face=a.face))
        assert all(r.status == "ok" for r in res), res
        feat = FrameFeaturizer.from_cache(str(cache), [a.backbone], "video", dev)
        dim = feat.visual[0].backbone.dim
        torch.manual_seed(0)
        spec = ModelSpec(temporal=a.temporal, causal=True, label_position="last", horizon=a.horizon, d_model=256)
        head = OnlineHead(HeadModel(spec, "mtl", {"visual": dim}).to(dev), a.window)
        dec, emb, hd, tot = [], [], [], []
        src = frame_source(video=video)
        t_all = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            item = next(src, None)
            if item is None:
                break
            frame, _, ok = item
            t1 = time.perf_counter()
            feats, valid = feat(frame, ok)
            t2 = time.perf_counter()
            head.step(feats, valid)
            t3 = time.perf_counter()
            dec.append((t1 - t0) * 1e3)
            emb.append((t2 - t1) * 1e3)
            hd.append((t3 - t2) * 1e3)
            tot.append((t3 - t1) * 1e3)
        wall = time.perf_counter() - t_all
    out = {"device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "backbone": a.backbone, "face": a.face, "video": a.size, "frames": len(tot), "window": a.window,
           "temporal": a.temporal, "latency": pct(tot), "decode": pct(dec), "crop_embed": pct(emb), "head": pct(hd),
           "fps_compute": 1e3 / float(np.mean(tot[1:])), "fps_end_to_end": len(tot) / wall}
    print(json.dumps(out, indent=2))
    if a.out:
        a.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
