"""Train an upsampling network on PU-GAN-format patches: Chamfer (+ repulsion/uniform), Adam, resumable run folder."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affcli.common.device import autocast
from affcli.common.progress import progress_bar
from affcli.common.runs import config_hash, read_json, seed_everything, write_checksums, write_json
from affcli.pointcloud.checkpoint import MODEL_FILE, checked, OPTIM_FILE, load_optimizer, restore_model, save_model, save_optimizer
from affcli.pointcloud.config import TrainConfig
from affcli.pointcloud.data import augment, read_pugan_h5
from affcli.pointcloud.errors import PointCloudError, reading
from affcli.pointcloud.losses import upsampling_loss
from affcli.pointcloud.models import create_model
from affcli.pointcloud.ops import farthest_point_sample, gather_points, normalize_unit_sphere
from affcli.pointcloud.runtime import resolve_device


RUN_FILES = ["config.json", MODEL_FILE, OPTIM_FILE, "metrics.json"]  # checked on resume and by every reader


def load_patches(cfg: TrainConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and gt patches as device tensors, checked against the ratio and for NaNs."""
    if cfg.inputs not in ("h5", "fps"):
        raise PointCloudError(f"inputs must be 'h5' (the file's sparse patches) or 'fps' (FPS of the gt), got {cfg.inputs!r}")
    inp, gt = read_pugan_h5(cfg.data, cfg.input_key, cfg.gt_key)
    if cfg.max_patches:
        inp, gt = inp[: cfg.max_patches], gt[: cfg.max_patches]
    if not (torch.isfinite(torch.from_numpy(inp)).all() and torch.isfinite(torch.from_numpy(gt)).all()):
        raise PointCloudError(f"{cfg.data}: training patches contain NaN or infinite coordinates")
    if gt.shape[1] != cfg.ratio * inp.shape[1]:
        raise PointCloudError(
            f"{cfg.data}: patches are x{gt.shape[1] / inp.shape[1]:g} ({inp.shape[1]} -> {gt.shape[1]} points), "
            f"cannot train ratio {cfg.ratio}"
        )
    return torch.from_numpy(inp).to(device), torch.from_numpy(gt).to(device)


def split_validation(cfg: TrainConfig, inp: torch.Tensor, gt: torch.Tensor):
    """(train inp, train gt, val inp, val gt): every cfg.val_every-th shape of the file's mesh_index held out whole."""
    if not cfg.val_every:
        return inp, gt, None, None
    import h5py

    with reading(cfg.data, "HDF5 training file"), h5py.File(cfg.data, "r") as fh:
        if "mesh_index" not in fh:
            raise PointCloudError(f"{cfg.data}: no mesh_index dataset, cannot hold out shapes (val_every)")
        owner = torch.from_numpy(np.asarray(fh["mesh_index"][...], np.int64).reshape(-1)[: len(inp)]).to(inp.device)
    if len(owner) != len(inp):
        raise PointCloudError(f"{cfg.data}: mesh_index has {len(owner)} entries for {len(inp)} patches")
    held = owner % cfg.val_every == 0
    if held.all() or not held.any():
        raise PointCloudError(f"{cfg.data}: val_every={cfg.val_every} leaves no training or no validation shape")
    return inp[~held], gt[~held], inp[held], gt[held]


@torch.no_grad()
def validation_batches(inp: torch.Tensor, gt: torch.Tensor, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The held-out (input, gt) batches, made once per run: fixed FPS inputs of each gt patch, both normalised."""
    return [normalise_pair(gather_points(y, farthest_point_sample(y, inp.shape[1])), y) for y in gt.split(batch)]


@torch.no_grad()
def validation_cd(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean Chamfer of the held-out batches (`validation_batches`), no augmentation, eval mode."""
    was = model.training
    model.eval()
    total = 0.0
    for x, y in batches:
        with autocast(y.device):
            total += float(upsampling_loss(model(x), y)["cd"]) * len(y)
    model.train(was)
    return total / sum(len(y) for _, y in batches)


def keep_inputs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(logits, spacing) of the last forward of a model with a keep head, else None."""
    scores = getattr(model, "last_scores", None)
    return None if scores is None else (scores, model.last_spacing)


def normalise_pair(inp: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both clouds mapped by the input's centroid and radius, as inference normalises each input patch."""
    inp_n, c, r = normalize_unit_sphere(inp)
    return inp_n, (gt - c) / r


def _start(cfg: TrainConfig, model: torch.nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator):
    """(first epoch, step, history, untrained val_cd): resume from the run folder when it holds a checkpoint of the
    same run."""
    out = Path(cfg.out)
    if not (out / MODEL_FILE).is_file() or not (out / OPTIM_FILE).is_file():
        return 0, 0, [], None
    with reading(out / "config.json", "run config (JSON)"):
        old = read_json(checked(out / "config.json"))
        same = config_hash(old.get("identity", {})) == config_hash(cfg.identity())
    if not same:
        raise PointCloudError(f"{out}: holds a different run (other data/model/options); use another --out")
    restore_model(model, out)
    with reading(out / OPTIM_FILE, "optimizer checkpoint"):
        extra = load_optimizer(opt, out)
        gen.set_state(extra["rng"])
        first, step = int(extra["epoch"]), int(extra["step"])
    with reading(out / "metrics.json", "run metrics (JSON)"):
        metrics = read_json(checked(out / "metrics.json")) if (out / "metrics.json").is_file() else {}
        hist = [h for h in metrics.get("epochs", []) if h["epoch"] > 0]  # older runs logged the untrained val_cd as epoch 0
        old_initial = next((h.get("val_cd") for h in metrics.get("epochs", []) if h["epoch"] == 0), None)
        initial = metrics.get("val_cd_initial", old_initial)
    return first, step, hist, initial


def train(cfg: TrainConfig, console=None) -> dict[str, Any]:
    """Run (or resume) training; writes config.json, metrics.json and checkpoints into cfg.out; returns metrics."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    inp, gt = load_patches(cfg, device)
    inp, gt, val_inp, val_gt = split_validation(cfg, inp, gt)
    model = create_model(cfg.model, cfg.ratio, **cfg.model_options).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out)
    first, step, hist, val_initial = _start(cfg, model, opt, gen)
    write_json(
        out / "config.json",
        {
            **dataclasses.asdict(cfg),
            "identity": cfg.identity(),
            "config_hash": config_hash(cfg.identity()),
            "device_used": str(device),
            "n_patches": len(inp),
            "n_val_patches": 0 if val_gt is None else len(val_gt),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
    )
    write_checksums(out, RUN_FILES)
    n = len(inp)
    bs = min(cfg.batch_size, n)
    steps = math.ceil(n / bs)
    t0, stopped = time.time(), None
    val = None if val_gt is None else validation_batches(val_inp, val_gt, bs)
    if val is not None and val_initial is None:
        val_initial = validation_cd(model, val)
    model.train()
    with progress_bar(console=console) as bar:
        task = bar.add_task(f"train {cfg.model} x{cfg.ratio}", total=max(0, cfg.epochs - first) * steps, info="")
        for epoch in range(first, cfg.epochs):
            perm = torch.randperm(n, generator=gen).to(device)
            sums: dict[str, float] = {}
            te = time.time()
            for s in range(steps):
                idx = perm[s * bs : (s + 1) * bs]
                x, y = inp[idx], gt[idx]
                if cfg.inputs == "fps":
                    x = gather_points(y, farthest_point_sample(y, x.shape[1], "random", gen))
                if cfg.augment:
                    x, y = augment(x, y, gen, sigma=cfg.jitter, clip=3 * cfg.jitter)
                x, y = normalise_pair(x, y)
                with autocast(device):
                    pred = model(x)
                losses = upsampling_loss(pred, y, cfg.repulsion, cfg.uniform, cfg.hausdorff, keep_inputs(model),
                                         cfg.keep_weight)
                opt.zero_grad(set_to_none=True)
                losses["loss"].backward()
                opt.step()
                step += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                bar.update(task, advance=1, info=f"ep {epoch + 1} cd {float(losses['cd'].detach()) * 1e3:.3f}e-3")
                if cfg.max_minutes is not None and time.time() - t0 > cfg.max_minutes * 60:
                    stopped = "time budget"
                    break
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    stopped = "step budget"
                    break
            done = s + 1
            hist.append(
                {
                    "epoch": epoch + 1,
                    "steps": done,
                    "time_s": round(time.time() - te, 3),
                    **{k: v / done for k, v in sums.items()},
                }
            )
            if val_gt is not None:
                hist[-1]["val_cd"] = validation_cd(model, val)
            _checkpoint(model, opt, gen, out, epoch + 1, step, hist, val_initial, cfg, stopped)
            if stopped:
                break
    return read_json(out / "metrics.json")


def _checkpoint(
    model, opt, gen, out: Path, epoch: int, step: int, hist: list, val_initial: float | None, cfg: TrainConfig, stopped
) -> None:
    """Weights, optimizer + RNG state and the loss curve (val_cd_initial: the untrained model's), each atomically."""
    save_model(model, out)
    save_optimizer(opt, out, {"epoch": torch.tensor(epoch), "step": torch.tensor(step), "rng": gen.get_state()})
    write_json(
        out / "metrics.json",
        {
            "epochs": hist,
            "epochs_done": epoch,
            "steps_done": step,
            "final_loss": hist[-1]["loss"] if hist else None,
            "final_cd": hist[-1]["cd"] if hist else None,
            "val_cd_initial": val_initial,
            "val_cd": [h["val_cd"] for h in hist if "val_cd" in h],
            "stopped": stopped,
            "target_epochs": cfg.epochs,
        },
    )
    write_checksums(out, RUN_FILES)
