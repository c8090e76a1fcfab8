"""Optional self-supervised stage: masked-frame feature reconstruction to pretrain projections and temporal heads."""
from __future__ import annotations

import torch
from torch import nn

from affcli.common.device import autocast
from affcli.heads.data import Data
from affcli.heads.losses import masked_mean
from affcli.heads.model import HeadModel
from affcli.heads.windows import Windows, gather, sample_batches


def pretrain(model: HeadModel, data: Data, win: Windows, cfg, mask_p: float = 0.3) -> list[float]:
    """Replace a fraction of valid frames by the mask token and reconstruct their input features; returns epoch losses."""
    dec = nn.ModuleDict({m: nn.Linear(model.temporal[m].out_dim, data.in_dims[m]) for m in model.modalities}).to(data.device)
    params = [p for m in model.modalities for p in (*model.proj[m].parameters(), *model.temporal[m].parameters(),
                                                    model.mask_token[m])] + list(dec.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    history = []
    model.train()
    for _ in range(cfg.ssl_epochs):
        total, n = torch.zeros((), device=data.device), 0
        for rows in sample_batches(len(win), cfg.batch_size, gen, data.device):
            xs, vs = gather(data.modalities, data.valid, win, rows)
            loss = torch.zeros((), device=data.device)
            with autocast(data.device, cfg.amp):
                for m in model.modalities:
                    h = model.proj[m](xs[m])
                    drop = (torch.rand(h.shape[:2], device=h.device) < mask_p) & vs[m]
                    h = torch.where(drop.unsqueeze(-1), model.mask_token[m].to(h.dtype), h)
                    rec = dec[m](model.temporal[m](h, vs[m])).float()
                    loss = loss + masked_mean(((rec - xs[m]) ** 2).mean(-1), drop)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or 1.0)
            opt.step()
            total += loss.detach()
            n += 1
        history.append(float(total) / max(1, n))
    if history and not all(map(lambda v: v == v, history)):
        raise FloatingPointError(f"ssl pretraining loss is NaN: {history}")
    return history
