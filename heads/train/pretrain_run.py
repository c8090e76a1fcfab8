"""`affcli pretrain`: self-supervised pretraining of a head encoder on a cache's unlabelled features, saved so that
`train-head --init-from RUN` loads it (same modules, same spec)."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affcli.common.cli_options import option
from affcli.heads.config import ModelSpec

BUILD_TASK = "expr"
"""The task the encoder's head model is built with; only the encoder is saved, so any task would do."""


@dataclass
class PretrainConfig:
    """One pretraining run: data, encoder architecture (as train-head's [model]), method, views, optimisation."""

    cache: str = option(help="Feature cache (Zarr) written by `affcli extract`.")
    out: str = option("runs/pretrain", help="Run folder (config.json, encoder.safetensors, metrics.json).")
    features: list[str] = option([], short="-f", shown="all in the cache", help="Feature set.")
    videos: str | None = option(None, help="Only these videos: a comma list or a file of ids.", shown="all")
    model: ModelSpec = option(ModelSpec, help="The encoder architecture (use the same in train-head).")
    method: str = option("simclr", help="Method (registry): simclr, byol, masked, with options, e.g. "
                                        "'simclr(temperature=0.2)'.")
    positives: str = option("none", help="Emotion-aware positives: none, kmeans (pseudo-classes of the encoder's "
                                         "embeddings, refreshed per epoch), text (nearest CLIP prompt), both.")
    clusters: int = option(8, help="k of the k-means pseudo-classes.")
    prompts: str | None = option(None, help="Prompt set of text positives.", shown="lsd6, else expr8")
    window: int | None = option(None, help="Window length in frames.", shown="1 for image caches, else 32")
    stride: int | None = option(None, help="Window stride in frames.", shown="window / 2")
    aug_mask: float = option(0.15, help="View augmentation: fraction of window frames masked.")
    aug_noise: float = option(0.1, help="View augmentation: Gaussian noise, in units of the feature std.")
    aug_crop: float = option(0.6, help="View augmentation: shortest temporal crop, as a fraction of the window.")
    aug_modality_drop: float = option(0.2, help="View augmentation: probability of dropping one modality.")
    epochs: int = option(20, help="Epochs.")
    batch_size: int = option(256, help="Windows per step (contrastive methods want large batches).")
    lr: float = option(1e-3, help="AdamW learning rate.")
    weight_decay: float = option(1e-2, help="AdamW weight decay.")
    seed: int = option(0, help="Seed.")
    device: str = option("auto", help="auto, cpu, cuda, cuda:1.")
    amp: bool = option(True, help="bf16 autocast on CUDA.")
    tensorboard: bool = option(True, help="Write TensorBoard event files (loss and learning rate per epoch) in the "
                                          "run folder.")
    mlflow: str | None = option(None, help="Also log parameters, metrics and the run folder to this MLflow tracking "
                                           "server URI (pip install 'affcli[mlflow]').", shown="off")

    def validate(self) -> None:
        """Cheap checks before any data is read: values, then the parts (heads.parts, as train-head checks them)."""
        from affcli.heads.train.ssl_methods import check_method

        for k in ("epochs", "batch_size", "clusters"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"pretrain: {k} must be >= 1, not {getattr(self, k)}")
        self.model.validate()
        self.model.resolve()
        check_method(self.method, self.positives)


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrain the encoder on every (listed) video of the cache; write the run folder; returns metrics."""
    import numpy as np
    import torch

    from affcli.cache import FeatureStore, load_table
    from affcli.common.checkpoint import write_checkpoint
    from affcli.common.device import resolve_device
    from affcli.common.ids import parse_id_list
    from affcli.common.runs import seed_everything, write_json
    from affcli.heads.config import resolve_path
    from affcli.heads.data.dataset import Data
    from affcli.heads.data.loading import is_image_cache, resolve_features
    from affcli.heads.model.head import HeadModel
    from affcli.heads.train.pretrain import ENCODER_FILE, SSLInputs, ViewAug, encoder_record, encoder_state, fit_encoder
    from affcli.heads.train.ssl import prompt_embeddings, stored_views
    from affcli.heads.train.tracking import Tracker, mlflow_module
    from affcli.heads.data.windows import make_windows

    t0 = time.perf_counter()
    cfg.validate()
    if cfg.mlflow:
        mlflow_module()
    seed_everything(cfg.seed)
    store = FeatureStore(cfg.cache, mode="r")
    feats = resolve_features(cfg, store)
    complete = set.intersection(*[set(store.videos(f)) for f in feats])
    videos = sorted(complete) if cfg.videos is None else parse_id_list(cfg.videos)
    missing = [v for v in videos if v not in complete]
    if missing:
        raise ValueError(f"{cfg.cache}: videos not complete in {', '.join(feats)}: {', '.join(missing[:5])}")
    if not videos:
        raise ValueError(f"{cfg.cache}: no video is complete in {', '.join(feats)}")
    window = cfg.window or (1 if is_image_cache(store, feats) else 32)
    stride = cfg.stride or max(1, window // 2)
    device = resolve_device(cfg.device)
    table = load_table(cfg.cache, feats, videos=videos)
    text = {n: store.read_text_embeddings(n, s)[1] for n, s in store.text_sets() if s in feats}
    data = Data.from_table(table, {}, {"all": list(table.videos)}, BUILD_TASK, feats, text, device)
    win = make_windows(data.starts, data.lengths, window, stride).to(device)
    views = stored_views(cfg.cache, feats, store.modalities(feats), data.videos, device)
    torch.manual_seed(cfg.seed)
    model = HeadModel(cfg.model, BUILD_TASK, data.in_dims).to(device)
    model.fit_inputs(data.modalities, data.valid, data.rows_of("all").to(device))
    inp = SSLInputs(data.modalities, data.valid, views, win, prompt_embeddings(data.text, cfg.prompts))
    aug = ViewAug(cfg.aug_mask, cfg.aug_noise, cfg.aug_crop, cfg.aug_modality_drop)
    t1 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(out, {**dataclasses.asdict(cfg), "cache": resolve_path(cfg.cache)}, cfg.tensorboard, cfg.mlflow,
                      out.name, {"affcli.kind": "pretrain"})
    try:
        history = fit_encoder(model, inp, cfg.method, cfg.positives, epochs=cfg.epochs, batch_size=cfg.batch_size,
                              lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed, amp=cfg.amp,
                              clusters=cfg.clusters, aug=aug,
                              on_epoch=lambda e, loss: tracker.log(e, {"loss/train": loss, "lr": cfg.lr}))
    except BaseException:
        tracker.close(status="FAILED", artifacts=False)
        raise
    write_json(out / "config.json", {**dataclasses.asdict(cfg), "cache": resolve_path(cfg.cache), "features": feats,
                                     "window": window, "stride": stride})
    write_checkpoint(out / ENCODER_FILE, encoder_state(model), encoder={**encoder_record(model), "features": feats})
    result = {"loss": history, "final_loss": history[-1] if history else None, "windows": len(win),
              "videos": len(videos), "stored_views": {m: int(v.shape[0]) for m, v in views.items()},
              "window": window, "method": cfg.method, "positives": cfg.positives, "features": feats,
              "timings": {"data_s": t1 - t0, "train_s": time.perf_counter() - t1}, "device": str(device),
              "loss_finite": bool(np.isfinite(history).all())}
    write_json(out / "metrics.json", result)
    tracker.close(final={"final_loss": result["final_loss"]})
    return result


def pretrain_command(fields: dict[str, Any]) -> int:
    """Body of `affcli pretrain`: the flat options (the model's among them) -> PretrainConfig, run, one summary line;
    bad options and data are one-line errors."""
    import typer

    from affcli.cache.errors import CacheError
    from affcli.common.commands import guarded
    from affcli.common.registry import UnknownNameError

    model_keys = {k: fields.pop(k) for k in list(fields) if k in {f.name for f in dataclasses.fields(ModelSpec)}}
    cfg = guarded((ValueError, TypeError), lambda: PretrainConfig(**fields, model=ModelSpec.from_dict(model_keys)))
    m = guarded((CacheError, UnknownNameError, ValueError, FileNotFoundError, FloatingPointError), run_pretrain, cfg)
    views = ", ".join(f"{k}: {v} stored views" for k, v in m["stored_views"].items()) or "feature-space views only"
    typer.echo(f"{cfg.method} (positives {cfg.positives}): {m['windows']} windows of {m['window']} frames, {views}; "
               f"loss {m['loss'][0]:.4f} -> {m['final_loss']:.4f} -> {cfg.out}")
    return 0
