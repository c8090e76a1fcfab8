"""`affcli demo --regimes`: each training regime of issue 11 once on the demo data, one summary line each (the causal
one, demo_causal, also streams a video and compares with offline predict). It joins
pipeline (still-image extraction) and heads (training), so it lives in serve/, the one package that imports both."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from affcli.common.vocab import LSD_CLASSES

LSD_SPLITS = ("training_set_synthetic_images", "validation_set_real_images")


def lsd_images(workdir: Path, device: str = "cpu") -> dict[str, Any]:
    """An LSD-style PNG tree (train/val class folders) -> `extract --images-dir` (clip:tiny, no faces) ->
    `train-head --task lsd --window 1`; returns the val metrics, image and folder counts."""
    from affcli.heads.train.demo import demo_lsd_train
    from affcli.pipeline.extract import ExtractConfig, run_extract
    from affcli.synthetic.images import write_image_tree

    tree = workdir / "tree"
    for i, (split, n) in enumerate(zip(LSD_SPLITS, (12, 4))):
        write_image_tree(tree, per_class=n, classes=LSD_CLASSES[:3], size=32, seed=i, split=split)
    cache = workdir / "images.zarr"
    res = run_extract(ExtractConfig(cache=cache, backbones=["clip:tiny"], images_dir=tree, device=device,
                                    batch_size=64))
    failed = [r for r in res if r.status == "failed"]
    if failed:
        raise ValueError(f"demo --regimes: image folder {failed[0].video_id} failed: {failed[0].message}")
    m = demo_lsd_train(cache, tree, workdir / "run", device)
    return {**m, "folders": len(res), "images": sum(r.n_frames for r in res)}


def _summary(s: dict[str, Any], kind: str) -> str:
    """One line of figures from a regime's summary dict."""
    f = lambda x: f"{x:.3f}"  # noqa: E731
    if kind == "lsd":
        return (f"LSD images: {s['images']} PNGs in {s['folders']} class folders -> extract --images-dir (clip:tiny) "
                f"-> train-head --task lsd --window 1: val acc {f(s['acc'])}, p_lsd {f(s['p_lsd'])} "
                f"(6-class macro F1, 3 classes present)")
    if kind == "ssl":
        p = s["probe"]
        return (f"SSL pretrain + linear probe (synthetic LSD features, 5 labels/class): probe F1 random {f(p['random'])}"
                f" -> SimCLR {f(p['ssl'])} -> emotion-aware (k-means positives) {f(p['aware'])}")
    if kind == "distill":
        a, d = s["alone"], s["distill"]
        return (f"distillation: MTL student on {s['label_fraction']:.0%} of the labels, P_MTL alone {f(a['p_mtl'])} -> "
                f"with {len(s['teachers'])} teachers {f(d['p_mtl'])}; teacher targets cached for "
                f"{sum(s['teacher_cache'].values())} teacher x video pairs, "
                f"rerun {s['distill_rerun_s']:.1f} s vs {s['distill_run_s']:.1f} s")
    if kind == "postprocess":
        return (f"post-processing (interpolate linear): AU {f(s['au']['untuned'])} -> {f(s['au']['tuned'])} "
                f"(tuned thresholds), EXPR {f(s['expr']['untuned'])} -> {f(s['expr']['tuned'])} (tuned biases), "
                f"tuned and scored on val")
    return (f"causal forecasting: VA --causal --horizon {s['horizon']} val CCC {f(s['val_main'])}; stream of "
            f"{s['video']}: {s['stream_frames']} frames, max |stream - predict| {s['stream_max_abs_diff']:.1e}, "
            f"p50 {s['p50_ms']:.1f} ms, {s['fps']:.0f} frames/s")


def demo_regimes(out: str | Path, cache: str | Path, labels: str | Path,
                 device: str = "cpu") -> Iterator[tuple[str, str, float]]:
    """Run each regime once under out/regimes on the demo's cache and labels; yields (regime, one-line summary,
    seconds) as each finishes. Tiny heads run with one torch thread (faster than two on a shared CPU)."""
    import torch

    from affcli.heads.train.demo import demo_distill, demo_lsd, demo_postprocess

    work = Path(out) / "regimes"
    steps: list[tuple[str, Callable[[], dict]]] = [
        ("lsd", lambda: lsd_images(work / "lsd_images", device)),
        ("ssl", lambda: demo_lsd(work / "ssl")),
        ("distill", lambda: demo_distill(work, cache, labels, device)),
        ("postprocess", lambda: demo_postprocess(work, cache, labels, device)),
        ("causal", lambda: demo_causal(work, cache, labels, device)),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for kind, step in steps:
            t0 = time.perf_counter()
            summary = step()
            yield kind, _summary(summary, kind), time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)


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
