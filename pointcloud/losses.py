"""Training losses: Chamfer (PU-GCN convention), PU-Net repulsion, a nearest-neighbour-spacing uniformity term and a
soft Hausdorff term (ours: Chamfer averages away the few stray points that Hausdorff and P2F punish)."""

from __future__ import annotations

import torch
from torch import Tensor

from affcli.pointcloud.metrics import _nn_sq
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


def soft_hausdorff(pred: Tensor, gt: Tensor, worst: float = 0.02) -> Tensor:
    """Mean over clouds of the mean of the worst `worst` fraction of squared nearest-neighbour distances, pred->gt
    (stray points) plus gt->pred (holes): a smooth stand-in for the Hausdorff distance (max d^2 + max d^2)."""
    return _worst_mean(*_nn_sq(pred, gt), worst)


def _worst_mean(fwd: Tensor, bwd: Tensor, worst: float = 0.02) -> Tensor:
    """`soft_hausdorff` from the squared nearest-neighbour distances fwd [B,N], bwd [B,M]."""
    top = [d.topk(max(1, round(worst * d.shape[-1])), dim=-1).values.mean(-1) for d in (fwd, bwd)]
    return (top[0] + top[1]).mean()


def upsampling_loss(
    pred: Tensor, gt: Tensor, repulsion: float = 0.0, uniform: float = 0.0, hausdorff: float = 0.0
) -> dict[str, Tensor]:
    """{'loss', 'cd', ...}: Chamfer plus the weighted optional terms, all in float32."""
    pred, gt = pred.float(), gt.float()
    fwd, bwd = _nn_sq(pred, gt)  # one nearest-neighbour pass serves Chamfer and the soft Hausdorff
    out = {"cd": (fwd.mean(-1) + bwd.mean(-1)).mean()}
    loss = out["cd"]
    if hausdorff:
        out["hausdorff"] = _worst_mean(fwd, bwd)
        loss = loss + hausdorff * out["hausdorff"]
    if repulsion:
        out["repulsion"] = repulsion_loss(pred)
        loss = loss + repulsion * out["repulsion"]
    if uniform:
        out["uniform"] = uniform_loss(pred)
        loss = loss + uniform * out["uniform"]
    out["loss"] = loss
    return out
