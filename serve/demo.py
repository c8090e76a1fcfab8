"""The causal regime of `affcli demo --regimes`: train a causal forecaster on the demo cache, then stream one
validation video through it and check it against the offline `predict` of the same run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DEMO_CAUSAL = {"task": "va", "temporal": "gru(hidden=32)", "fusion": "none:visual", "causal": True,
               "label_position": "last", "horizon": 10, "window": 16, "stride": 2, "d_model": 32, "loss": "ccc",
               "epochs": 4, "patience": 4, "batch_size": 64, "lr": 3e-3, "plots": False}


def _visual_spec(cache: Path) -> str:
    from affcli.cache.store import FeatureStore

    store = FeatureStore(cache, mode="r")
    sets = store.feature_sets()
    mods = store.modalities(sets)
    visual = [s for s in sets if mods[s] == "visual"]
    if not visual:
        raise ValueError(f"{cache}: the causal demo needs a visual feature set; present: {', '.join(sets)}")
    return "clip:tiny" if "clip:tiny" in visual else visual[0]


def demo_causal(workdir: str | Path, cache: str | Path | None = None, labels: str | Path | None = None,
                device: str = "cpu") -> dict[str, Any]:
    """Train `--causal --horizon 10` (VA, GRU) on the demo cache (made under workdir when not given), stream the
    first validation video and return {run_dir, horizon, val_main, stream frames, max |stream - predict|,
    latency p50/p99 ms, frames/s}."""
    import polars as pl

    from affcli.cache.store import FeatureStore
    from affcli.heads.config import RunConfig
    from affcli.heads.infer.predict import predict_run
    from affcli.heads.train.trainer import train_run
    from affcli.serve.stream import Streamer, frame_source, latency_summary

    workdir = Path(workdir)
    if cache is None or labels is None:
        from affcli.pipeline.extract import ExtractConfig, run_extract
        from affcli.synthetic.media import make_demo_dataset

        ds = make_demo_dataset(workdir / "data", n_videos=3, seconds=4.0, seed=0)
        cache, labels = workdir / "cache.zarr", ds.label_root
        run_extract(ExtractConfig(cache=cache, backbones=["clip:tiny"], video_dir=ds.video_dir, device=device,
                                  batch_size=64))
    spec = _visual_spec(Path(cache))
    run = workdir / "causal"
    cfg = RunConfig.from_dict({**DEMO_CAUSAL, "features": [spec], "cache": str(cache), "labels": str(labels),
                               "device": device, "out": str(run), "name": "demo-causal"})
    m = train_run(cfg)
    from affcli.heads.data.loading import split_label_videos

    video = next(iter(split_label_videos(cfg, cfg.splits[1]).values()))
    source = FeatureStore(cache, mode="r").video_attrs(spec, video)["source"]
    predict_run(run, None, workdir / "causal_pred", videos=[video])
    df = pl.read_parquet(workdir / "causal_pred" / "predictions_va.parquet").filter(pl.col("video") == video)
    offline = df.sort("frame").select("va_0", "va_1").to_numpy()
    s = Streamer.from_run(run, device=device)
    rows = list(s.run(frame_source(video=source)))
    h = s.head.horizon
    online = np.stack([r.preds["va"] for r in rows])[: len(offline) - h]
    lat = latency_summary([r.latency_ms for r in rows])
    return {"run_dir": str(run), "horizon": h, "val_main": m["main"], "video": video, "stream_frames": len(rows),
            "stream_max_abs_diff": float(np.abs(online - offline[h:]).max()), **lat}
