"""`affcli stream` against offline `predict` on the full demo cache: the demo's causal VA run (serve/regimes.py
DEMO_CAUSAL: GRU, horizon 10, clip:tiny on MTCNN faces) streamed over every demo video; the largest |stream - predict|
per video and over all, and the stream's latency.

    python bench/stream_equality.py --videos 6 --seconds 8 --out r.json      # the `affcli demo` cache (default size)

The demo data, cache and run are made under --work (kept: a rerun reuses them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "affcli_bench_stream_equality")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import polars as pl
    import torch

    from affcli.heads.config import RunConfig
    from affcli.heads.infer.predict import predict_run
    from affcli.heads.train.trainer import train_run
    from affcli.pipeline.demo import demo_extract
    from affcli.serve.regimes import DEMO_CAUSAL
    from affcli.serve.stream import Streamer, frame_source, latency_summary

    torch.set_num_threads(1)
    work = a.work / f"demo_{a.videos}x{a.seconds:g}s_seed{a.seed}"
    cache = work / "cache.zarr"
    t0 = time.perf_counter()
    if not (work / "extracted").is_file():
        ds, cache, results = demo_extract(work, a.videos, a.seconds, a.seed)
        assert all(r.status == "ok" for r in results), results
        (work / "extracted").write_text(str(ds.label_root))
    labels = Path((work / "extracted").read_text())
    extract_s = time.perf_counter() - t0
    run = work / "causal"
    if not (run / "metrics.json").is_file():
        cfg = RunConfig.from_dict({**DEMO_CAUSAL, "features": ["clip:tiny"], "cache": str(cache),
                                   "labels": str(labels), "device": "cpu", "out": str(run), "name": "demo-causal"})
        train_run(cfg)
    pred = work / "pred"
    predict_run(run, None, pred)
    df = pl.read_parquet(pred / "predictions_va.parquet")
    from affcli.cache.store import FeatureStore

    store = FeatureStore(cache, mode="r")
    per_video, lat = {}, []
    for video in sorted(df["video"].unique().to_list()):
        off = df.filter(pl.col("video") == video).sort("frame").select("va_0", "va_1").to_numpy()
        s = Streamer.from_run(run, device="cpu")  # a fresh head and face tracker per video
        h = s.head.horizon
        rows = list(s.run(frame_source(video=store.video_attrs("clip:tiny", video)["source"])))
        on = np.stack([r.preds["va"] for r in rows])[: len(off) - h]
        per_video[video] = {"frames": len(rows), "max_abs_diff": float(np.abs(on - off[h:]).max())}
        lat += [r.latency_ms for r in rows]
        print(video, per_video[video], flush=True)
    out = {"machine": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg(), "videos": a.videos,
           "seconds": a.seconds, "extract_s": round(extract_s, 1), "per_video": per_video,
           "max_abs_diff": max(v["max_abs_diff"] for v in per_video.values()), "latency": latency_summary(lat)}
    print(json.dumps(out, indent=2))
    if a.out:
        a.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
