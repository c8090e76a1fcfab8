"""Training losses: Chamfer (PU-GCN convention), PU-Net repulsion, a nearest-neighbour-spacing uniformity term and a
soft Hausdorff term (ours: Chamfer averages away the few stray points that Hausdorff and P2F punish)."""

from __future__ import annotations

import torch
from torch import Tensor

from affcli.pointcloud.metrics import _nn_sq
from affcli.pointcloud.ops import knn

KEEP_RADIUS = 0.5  # an output farther than this x its parent's spacing from the ground truth is a stray (the gt has
# ~2x the input's density, so a point on the surface lies within about half an input spacing of a gt point)


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


def keep_loss(logits: Tensor, spacing: Tensor, fwd: Tensor, radius: float = KEEP_RADIUS) -> Tensor:
    """Class-balanced binary cross-entropy of the keep head's logits [B,M] against 'this output lies within radius x
    its parent's spacing [B,M] of the ground truth' (fwd [B,M]: squared distances to the nearest gt point). Strays
    are ~1% of the outputs: each class weighs half, else the head learns to trust everything."""
    import torch.nn.functional as F

    label = (fwd.detach() < (radius * spacing) ** 2).float()
    n_keep = label.sum().clamp_min(1)
    n_stray = (label.numel() - label.sum()).clamp_min(1)
    weight = torch.where(label > 0, 0.5 / n_keep, 0.5 / n_stray) * label.numel()
    return F.binary_cross_entropy_with_logits(logits, label, weight=weight)


def upsampling_loss(
    pred: Tensor,
    gt: Tensor,
    repulsion: float = 0.0,
    uniform: float = 0.0,
    hausdorff: float = 0.0,
    keep: tuple[Tensor, Tensor] | None = None,
    keep_weight: float = 1.0,
) -> dict[str, Tensor]:
    """{'loss', 'cd', ...}: Chamfer plus the weighted optional terms, all in float32; keep = (logits, spacing) of
    a model's keep head adds keep_weight x `keep_loss` (and 'keep_acc', the share of outputs it labels right)."""
    pred, gt = pred.float(), gt.float()
    fwd, bwd = _nn_sq(pred, gt)  # one nearest-neighbour pass serves Chamfer, the soft Hausdorff and the keep labels
    out = {"cd": (fwd.mean(-1) + bwd.mean(-1)).mean()}
    loss = out["cd"]
    if keep is not None:
        out["keep"] = keep_loss(keep[0], keep[1], fwd)
        with torch.no_grad():
            out["keep_acc"] = ((keep[0] > 0) == (fwd < (KEEP_RADIUS * keep[1]) ** 2)).float().mean()
        loss = loss + keep_weight * out["keep"]
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
