"""Training losses: Chamfer (PU-GCN convention), PU-Net repulsion, and a nearest-neighbour-spacing uniformity term."""

from __future__ import annotations

import torch
from torch import Tensor

from affcli.pointcloud.metrics import chamfer
from affcli.pointcloud.ops import knn


def repulsion_loss(pred: Tensor, k: int = 4, h: float = 0.03) -> Tensor:
    """PU-Net repulsion: mean over points and their k nearest of -d * exp(-d^2 / h^2) (pushes close points apart)."""
    d2, _ = knn(pred, pred, k + 1)
    d2 = d2[..., 1:].clamp_min(1e-12)
    return (-d2.sqrt() * torch.exp(-d2 / h**2)).mean()


def uniform_loss(pred: Tensor) -> Tensor:
    """Squared coefficient of variation of nearest-neighbour distances per cloud (ours; 0 for an even spread)."""
    d = knn(pred, pred, 2)[0][..., 1].clamp_min(1e-12).sqrt()
    return (d.var(-1) / d.mean(-1).square().clamp_min(1e-12)).mean()


def upsampling_loss(pred: Tensor, gt: Tensor, repulsion: float = 0.0, uniform: float = 0.0) -> dict[str, Tensor]:
    """{'loss', 'cd', ...}: Chamfer plus the weighted optional terms, all in float32."""
    pred, gt = pred.float(), gt.float()
    out = {"cd": chamfer(pred, gt)}
    loss = out["cd"]
    if repulsion:
        out["repulsion"] = repulsion_loss(pred)
        loss = loss + repulsion * out["repulsion"]
    if uniform:
        out["uniform"] = uniform_loss(pred)
        loss = loss + uniform * out["uniform"]
    out["loss"] = loss
    return out
