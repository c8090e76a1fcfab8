"""Benchmark: cached-feature head training (TCN + xattn) on an Aff-Wild2-sized table vs the same head with a backbone in the loop.

    python bench/heads.py --device cpu --scale 0.005 --out results.json
    python bench/heads.py --device cuda --scale 1 --backbone clip:ViT-B-16/random --out results.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch


from affcli.common.device import autocast  # noqa: E402
from affcli.heads.config import RunConfig  # noqa: E402
from affcli.heads.data.dataset import Data  # noqa: E402
from affcli.heads.losses import LossContext, build_loss  # noqa: E402
from affcli.heads.train.trainer import batch_labels, build_model, train_windows  # noqa: E402
from affcli.heads.data.windows import gather, sample_batches  # noqa: E402

TRAIN_FRAMES, VAL_FRAMES = 2_600_000, 300_000
DIMS = {"visual": 512, "audio": 768 + 768}


def synthetic_data(scale: float, device: torch.device, frames_per_video: int = 5000, seed: int = 0) -> Data:
    """Random float16 features straight on the device (visual 512, audio 768+768) and random EXPR labels."""
    g = torch.Generator(device=device).manual_seed(seed)
    total = max(2 * frames_per_video, int((TRAIN_FRAMES + VAL_FRAMES) * scale))
    n_vid = max(2, math.ceil(total / frames_per_video))
    lens = np.full(n_vid, total // n_vid, np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    T = int(lens.sum())
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    mods = {}
    for m, d in DIMS.items():
        x = torch.empty(T, d, dtype=dtype, device=device)
        for a in range(0, T, 1 << 18):
            x[a:a + (1 << 18)] = torch.randn(min(1 << 18, T - a), d, generator=g, device=device).to(dtype)
        mods[m] = x
    labels = {"expr": torch.randint(0, 8, (T,), generator=g, device=device), "mask_expr": torch.ones(T, dtype=torch.bool, device=device)}
    n_val = max(1, round(n_vid * VAL_FRAMES / (TRAIN_FRAMES + VAL_FRAMES)))
    splits = {"train": list(range(n_vid - n_val)), "val": list(range(n_vid - n_val, n_vid))}
    return Data("expr", ["clip:synth", "wav2vec2:synth", "ast:synth"], [f"v{i}" for i in range(n_vid)], starts, lens,
                mods, {m: torch.ones(T, dtype=torch.bool, device=device) for m in DIMS}, labels, splits, {}, device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _step(model, loss_fn, opt, data: Data, cfg: RunConfig, win, rows, xs: dict, vs: dict) -> None:
    """One optimiser step of the EXPR head on a gathered batch (the same in both timed loops)."""
    y = batch_labels(data, ["expr"], win, rows, False)
    with autocast(data.device, cfg.amp):
        out = model(xs, vs, win.real[rows])
    loss, _ = loss_fn(out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def cached_epoch(data: Data, cfg: RunConfig, max_steps: int | None) -> dict:
    """Train steps on cached features; a full epoch unless max_steps (then the epoch time is extrapolated)."""
    model = build_model(cfg, data).to(data.device)
    loss_fn = build_loss(cfg.loss, LossContext(cfg.task, model.feat_dim, {}, {}, None, data.device)).to(data.device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=cfg.lr,
                            fused=data.device.type == "cuda")
    win = train_windows(data, cfg, ["expr"])
    steps_epoch = math.ceil(len(win) / cfg.batch_size)
    gen = torch.Generator().manual_seed(0)
    model.train()
    n, t0, windows = 0, None, 0
    target = max_steps or steps_epoch
    batches = itertools.chain.from_iterable(
        sample_batches(len(win), cfg.batch_size, gen, data.device) for _ in itertools.count())
    for rows in batches:
        if n == 3:
            _sync(data.device)
            t0, windows = time.perf_counter(), 0
        xs, vs = gather(data.modalities, data.valid, win, rows)
        _step(model, loss_fn, opt, data, cfg, win, rows, xs, vs)
        n += 1
        windows += len(rows)
        if n >= target + 3:
            break
    _sync(data.device)
    dt = time.perf_counter() - t0
    wps = windows / dt
    return {"windows_per_s": wps, "frames_per_s": wps * cfg.window, "epoch_s": len(win) / wps,
            "train_windows": len(win), "steps_per_epoch": steps_epoch, "measured_steps": n - 3,
            "n_params": sum(p.numel() for p in model.parameters())}


def backbone_loop(data: Data, cfg: RunConfig, spec: str, steps: int, batch_size: int) -> dict:
    """The same head, but each batch's visual features come from the backbone run on the frames (random images)."""
    from affcli.pipeline.backbones import build_backbone

    bb = build_backbone(spec, str(data.device))
    size = int(getattr(bb, "input_size", 224))
    cfg = RunConfig.from_dict({**cfg.to_dict(), "batch_size": batch_size})
    vis_dim = int(bb.dim)
    data = Data(data.task, data.features, data.videos, data.starts, data.lengths,
                {"visual": torch.zeros(data.modalities["audio"].shape[0], vis_dim, device=data.device,
                                       dtype=data.modalities["audio"].dtype), "audio": data.modalities["audio"]},
                data.valid, data.labels, data.splits, {}, data.device)
    model = build_model(cfg, data).to(data.device)
    loss_fn = build_loss(cfg.loss, LossContext(cfg.task, model.feat_dim, {}, {}, None, data.device)).to(data.device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=cfg.lr)
    win = train_windows(data, cfg, ["expr"])
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (cfg.batch_size * cfg.window, size, size, 3), dtype=np.uint8)
    n, t0, windows = 0, None, 0
    for rows in sample_batches(len(win), cfg.batch_size, gen, data.device):
        if n == 1:
            _sync(data.device)
            t0, windows = time.perf_counter(), 0
        xs, vs = gather({"audio": data.modalities["audio"]}, data.valid, win, rows)
        B = len(rows)
        with torch.no_grad():
            emb = bb.embed(bb.preprocess(frames[: B * cfg.window])).float()
        xs["visual"] = emb.view(B, cfg.window, -1).to(data.device).clone()
        vs["visual"] = win.real[rows]
        _step(model, loss_fn, opt, data, cfg, win, rows, xs, vs)
        n += 1
        windows += B
        if n >= steps + 1:
            break
    _sync(data.device)
    dt = time.perf_counter() - t0
    wps = windows / dt
    return {"backbone": spec, "input_size": size, "windows_per_s": wps, "frames_per_s": wps * cfg.window,
            "epoch_s_extrapolated": len(win) / wps, "measured_steps": n - 1, "batch_size": cfg.batch_size}


def main(argv: list[str] | None = None) -> dict:
    """Parse args, run both measurements, print and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of Aff-Wild2 size (2.6M train frames)")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=0, help="cap cached steps (0 = one full epoch)")
    ap.add_argument("--backbone", default=None, help="clip:tiny on CPU (default), clip:ViT-B-16/random on CUDA")
    ap.add_argument("--backbone-steps", type=int, default=5)
    ap.add_argument("--backbone-batch", type=int, default=8, help="windows per step with the backbone in the loop")
    ap.add_argument("--video-frames", type=int, default=5000, help="frames per synthetic video (at least two videos)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    cfg = RunConfig.from_dict(dict(task="expr", temporal="tcn(levels=4, channels=256, causal=true)", fusion="xattn",
                                   d_model=256, loss="ce", window=a.window, stride=a.stride, batch_size=a.batch_size,
                                   device=a.device, causal=True, amp=True))
    t = time.perf_counter()
    data = synthetic_data(a.scale, device, a.video_frames)
    build_s = time.perf_counter() - t
    res = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "scale": a.scale, "frames": int(data.lengths.sum()), "dims": DIMS, "window": a.window, "stride": a.stride,
           "head": f"{cfg.model.temporal} + {cfg.model.fusion}", "data_build_s": build_s}
    res["cached"] = cached_epoch(data, cfg, a.max_steps or None)
    spec = a.backbone or ("clip:ViT-B-16/random" if device.type == "cuda" else "clip:tiny")
    try:
        res["backbone_in_loop"] = backbone_loop(data, cfg, spec, a.backbone_steps, a.backbone_batch)
        res["speedup_cached_vs_backbone"] = res["cached"]["windows_per_s"] / res["backbone_in_loop"]["windows_per_s"]
    except ImportError as e:
        res["backbone_in_loop"] = {"error": f"pipeline.backbones unavailable: {e}"}
    print(json.dumps(res, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
