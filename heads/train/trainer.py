"""Train one head run: data on the device, windows by index arithmetic, AdamW + cosine, early stopping, artifacts.

Reuse data across runs (ablations): `data = prepare_data(cfg)` once, then `train_run(cfg_i, data=data)` for every
config whose `data_key(cfg_i.to_dict())` is the same; or pass `table=` (a FeatureTable) plus `labels=` (dense arrays
over its rows) and `splits=` ({'train': [videos], 'val': [videos]}) to skip the cache and label files entirely.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affcli.cache.table import FeatureTable
from affcli.common.device import autocast, resolve_device
from affcli.common.runs import config_hash, seed_everything, write_json
from affcli.heads.data.abaw_io import prediction_frame
from affcli.heads.model.checkpoint import CHECKPOINT, save_checkpoint
from affcli.heads.config import RunConfig
from affcli.heads.data.dataset import Data
from affcli.heads.data.loading import cached_modalities, data_key, prepare_data
from affcli.heads.infer.outputs import evaluate
from affcli.heads.losses import LossContext, build_loss
from affcli.heads.model.head import HeadModel
from affcli.heads.infer.postprocess import tune_run
from affcli.heads.train.teacher import loss_with_distill, teacher_source
from affcli.heads.train.tracking import Tracker, mlflow_module
from affcli.heads.tasks import task_outputs
from affcli.heads.data.windows import Windows, gather, make_windows, sample_batches

__all__ = ["RunConfig", "Data", "prepare_data", "data_key", "build_model", "train_run", "NaNLossError"]



class NaNLossError(FloatingPointError):
    """The training loss became NaN or infinite (the ablation marks the run failed)."""


def build_model(cfg: RunConfig, data: Data) -> HeadModel:
    """The head model for this config and data (input widths from the data)."""
    return HeadModel(cfg.model, cfg.task, data.in_dims)


def train_windows(data: Data, cfg: RunConfig, keys: list[str], unlabelled: bool = False) -> Windows:
    """Training windows of the train split that hold at least one labelled (target) frame (every window with
    `unlabelled`, for losses such as distill that also learn where labels are missing)."""
    s, n, vi = data.split_rows(cfg.splits[0])
    last = cfg.model.label_position == "last"
    win = make_windows(s, n, cfg.window, cfg.stride, "end" if last else "start", vi, cfg.model.dilation, cfg.model.horizon)
    win = win.to(data.device)
    if unlabelled:
        return win
    idx = win.target[:, None] if last else win.idx
    real = torch.ones_like(idx, dtype=torch.bool) if last else win.real
    has = torch.zeros(len(win), dtype=torch.bool, device=data.device)
    for k in keys:
        m = data.labels[f"mask_{k}"][idx]
        m = m.flatten(2).any(-1) if m.dim() > 2 else m
        has |= (m & real).any(1)
    if not bool(has.any()):
        raise ValueError(f"split {cfg.splits[0]!r}: no labelled frames for {', '.join(keys)}")
    return win.select(has)


def _lr_lambda(total: int, warm: int):
    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return f


def train_run(cfg: RunConfig, table: FeatureTable | Data | None = None, labels: dict | None = None, *,
              data: Data | None = None, splits: dict[str, list[str]] | None = None,
              progress: bool = False, epoch_hook: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train, early-stop on the val main metric, write the run folder (cfg.out); returns metrics (with 'main').

    The run folder also gets TensorBoard event files (cfg.tensorboard) and, with cfg.mlflow, an MLflow run.
    `epoch_hook(epoch, val main)` is called after each epoch's validation (a search prunes by raising from it)."""
    t_start = time.perf_counter()
    cfg.validate()
    if cfg.mlflow:
        mlflow_module()
    cfg.resolve(cached_modalities(cfg) if cfg.cache and table is None and data is None else None)
    seed_everything(cfg.seed)
    if isinstance(table, Data):
        data, table = table, None
    if data is None:
        data = prepare_data(cfg, table, labels, splits)
    t_data = time.perf_counter() - t_start
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**cfg.with_resolved_paths().to_dict(), "features": list(data.features)})
    tracker = Tracker(out, {**cfg.with_resolved_paths().to_dict(), "features": list(data.features)},
                      cfg.tensorboard, cfg.mlflow, cfg.name or out.name, {"affcli.task": cfg.task})
    try:
        result = _train(cfg, data, out, t_start, t_data, progress, epoch_hook, tracker)
    except BaseException:
        tracker.close(status="FAILED", artifacts=False)
        raise
    tracker.close(final={"main": result["main"], "val": result["val"]})
    return result


def _train(cfg: RunConfig, data: Data, out: Path, t_start: float, t_data: float, progress: bool,
           epoch_hook: Callable[[int, float], None] | None, tracker: Tracker) -> dict[str, Any]:
    device = data.device
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data).to(device)
    keys = [o.key for o in task_outputs(cfg.task)]
    tr_rows = data.rows_of(cfg.splits[0]).to(device)
    model.fit_inputs(data.modalities, data.valid, tr_rows)
    ctx = LossContext(cfg.task, model.feat_dim, {k: v[tr_rows] for k, v in data.labels.items()}, data.text,
                      teacher_source(data, cfg), device, cfg.prompts, tuple(cfg.distill_from))
    loss_fn = build_loss(loss_with_distill(cfg), ctx).to(device)
    win = train_windows(data, cfg, keys, unlabelled=any(getattr(t, "covers_unlabelled", False) for t in loss_fn.terms))
    ssl_history = []
    if cfg.init_from or cfg.ssl_epochs > 0 or cfg.freeze_encoder:
        from affcli.heads.train.ssl import pretrain

        ssl_history = pretrain(model, data, win, cfg)
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    steps_per_epoch = math.ceil(len(win) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps_per_epoch * cfg.epochs,
                                                              int(round(cfg.warmup * steps_per_epoch))))
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best: dict[str, Any] = {"main": -math.inf}
    bar = _Bar(cfg.epochs, out.name) if progress else None
    t_train, step_s = time.perf_counter(), 0.0
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            train_loss, terms = _train_epoch(model, loss_fn, opt, sched, params, data, win, cfg, gen, keys)
            step_s += time.perf_counter() - t0
            if not math.isfinite(train_loss):
                raise NaNLossError(f"{out}: training loss is {train_loss} at epoch {epoch} (terms: {terms}); "
                                   f"try a lower lr (now {cfg.lr}) or check the features for NaN")
            metrics, rows_np, preds = evaluate(model, data, cfg, cfg.splits[1])
            history.append({"epoch": epoch, "train_loss": train_loss, "val_main": metrics["main"],
                            "seconds": time.perf_counter() - t0, "terms": terms,
                            "val": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
            if bar:
                bar.update(epoch, train_loss, metrics["main"])
            tracker.log(epoch, {"loss/train": train_loss, "loss/terms": terms, "lr": sched.get_last_lr()[0],
                                "val": metrics})
            if epoch_hook is not None:
                epoch_hook(epoch, float(metrics["main"]))
            main = float(metrics["main"]) if math.isfinite(float(metrics["main"])) else -math.inf
            if "epoch" not in best or main > best["main"]:
                best = {"main": main, "epoch": epoch, "metrics": metrics, "rows": rows_np, "preds": preds,
                        "state": copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})}
            elif epoch - best["epoch"] >= cfg.patience:
                break
    finally:
        if bar:
            bar.close()
    train_seconds = time.perf_counter() - t_train
    save_checkpoint(out / CHECKPOINT, best["state"], model)
    result = {"main": best["main"], "task": cfg.task, "best_epoch": best["epoch"], "epochs": len(history),
              "val": best["metrics"], "history": history, "n_params": sum(p.numel() for p in model.parameters()),
              "n_train_windows": len(win), "causal": model.causal, "config_hash": config_hash(cfg.to_dict()),
              "timings": {"data_s": t_data, "train_s": train_seconds,
                          "epoch_s": train_seconds / max(1, len(history)),
                          "train_windows_per_s": len(win) * len(history) / max(step_s, 1e-9)},
              "device": str(device), "ssl_loss": ssl_history, "features": data.features}
    result.update(tune_run(cfg, data, best))
    _write_outputs(out, cfg, data, best, history)
    write_json(out / "metrics.json", result)
    return result


def batch_labels(data: Data, keys: list[str], win: Windows, rows: torch.Tensor, last: bool) -> dict[str, torch.Tensor]:
    """Labels and masks of a batch, per frame [B, W, ...] or of the last frame [B, ...]; padding is masked."""
    if last:
        idx = win.target[rows]
        real = torch.ones_like(idx, dtype=torch.bool)
    else:
        idx, real = win.idx[rows], win.real[rows]
    y = {"_idx": idx, "_real": real}
    for k in keys:
        y[k] = data.labels[k][idx]
        m = data.labels[f"mask_{k}"][idx]
        y[f"mask_{k}"] = m & real.view(*real.shape, *([1] * (m.dim() - real.dim())))
    return y


def _train_epoch(model: HeadModel, loss_fn, opt, sched, params: list, data: Data, win: Windows, cfg: RunConfig,
                 gen: torch.Generator, keys: list[str]) -> tuple[float, dict[str, float]]:
    """One pass over the shuffled training windows; returns the mean loss and mean loss terms (one sync)."""
    model.train()
    last = cfg.model.label_position == "last"
    loss_sum = torch.zeros((), device=data.device)
    parts_sum: dict[str, torch.Tensor] = {}
    n = 0
    for rows in sample_batches(len(win), cfg.batch_size, gen, data.device):
        xs, vs = gather(data.modalities, data.valid, win, rows)
        y = batch_labels(data, keys, win, rows, last)
        with autocast(data.device, cfg.amp):
            out = model(xs, vs, win.real[rows])
        loss, parts = loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        loss_sum += loss.detach()
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0) + v
        n += 1
    return float(loss_sum) / max(1, n), {k: float(v) / max(1, n) for k, v in parts_sum.items()}


def _write_outputs(out: Path, cfg: RunConfig, data: Data, best: dict, history: list[dict]) -> None:
    rows = best["rows"]
    lab = {k: v[torch.as_tensor(rows, device=data.device)].cpu().numpy() for k, v in data.labels.items()}
    if cfg.save_predictions:
        prediction_frame(data.videos, data.starts, rows, best["preds"], lab).write_parquet(out / "predictions_val.parquet")
    if not cfg.plots:
        return
    from affcli.heads.train import plots

    plots.curves(history, out / "curves.png")
    for o in task_outputs(cfg.task):
        if o.key not in best["preds"] or f"mask_{o.key}" not in lab:
            continue
        m = lab[f"mask_{o.key}"].astype(bool)
        m = m.all(-1) if m.ndim > 1 else m
        if o.kind == "class" and o.names:
            plots.confusion(lab[o.key][m].astype(int), best["preds"][o.key][m].argmax(1), list(o.names), out / "confusion.png")
        elif o.kind == "reg" and o.dim == 2 and m.any():
            plots.va_density(best["preds"][o.key][m], lab[o.key][m], out / "va_density.png")


class _Bar:
    """Rich progress bar, one tick per epoch, showing the loss and the val metric."""

    def __init__(self, epochs: int, name: str):
        from affcli.common.progress import progress_bar

        self.p = progress_bar("epochs")
        self.p.start()
        self.t = self.p.add_task(name, total=epochs)

    def update(self, epoch: int, loss: float, main: float) -> None:
        self.p.update(self.t, completed=epoch, info=f"loss {loss:.4f}  val {main:.4f}")

    def close(self) -> None:
        self.p.stop()
