"""Self-supervised pretraining methods (registry PRETRAIN: simclr, byol, masked), picked by name like every part.

A method sees the encoder (heads.train.pretrain.Encoder: a head's projection + temporal head) and a batch of views;
`check_method` is what the one resolution of a run's parts (heads.parts) calls, so no encoder is needed to check.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Annotated

import torch
import torch.nn.functional as F
from torch import nn

from affcli.common.checks import Fraction, PositiveFloat, Range, Width
from affcli.common.registry import Registry
from affcli.heads.losses import masked_mean
from affcli.heads.spec import parse_part

if TYPE_CHECKING:
    from affcli.heads.train.pretrain import Encoder

PRETRAIN: Registry = Registry("pretraining method", supplied=("dim",))
POSITIVES = ("none", "kmeans", "text", "both")


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, d_out))


def supcon(z: torch.Tensor, pos: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-positive InfoNCE over [N, P] embeddings with a [N, N] positive mask (SupCon; NT-Xent with one positive)."""
    z = F.normalize(z, dim=-1)
    logits = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, -1e9)
    logp = logits - torch.logsumexp(logits, 1, keepdim=True)
    pos = pos & ~eye
    return -((logp * pos).sum(1) / pos.sum(1).clamp_min(1)).mean()


@PRETRAIN.register("simclr", help="two views, NT-Xent (SupCon with pseudo-class positives when given)")
class SimCLR(nn.Module):
    """SimCLR: projector MLP, temperature-scaled contrastive loss over the batch's 2B views."""

    contrastive = True

    def __init__(self, dim: int, temperature: PositiveFloat = 0.1, hidden: Width = 128, proj_dim: Width = 64):
        super().__init__()
        self.head, self.temperature = _mlp(dim, hidden, proj_dim), temperature

    def forward(self, enc: Encoder, batch: dict) -> torch.Tensor:
        za, zb = self.head(enc(*batch["a"])), self.head(enc(*batch["b"]))
        b = len(za)
        idx = torch.arange(b, device=za.device)
        pos = torch.zeros(2 * b, 2 * b, dtype=torch.bool, device=za.device)
        pos[idx, idx + b] = pos[idx + b, idx] = True
        if batch.get("pos") is not None:
            pos |= batch["pos"].repeat(2, 2)
        return supcon(torch.cat([za, zb]), pos, self.temperature)

    def after_step(self, enc: Encoder) -> None:
        """Nothing to update outside the optimizer."""

    def embed(self, enc: Encoder, xs: dict, vs: dict) -> torch.Tensor:
        """The space pseudo-classes are clustered in: the projector's output."""
        return self.head(enc(xs, vs))


@PRETRAIN.register("byol", help="online predictor regresses an EMA target's view (and a same-pseudo-class window's)")
class BYOL(nn.Module):
    """BYOL: online encoder + projector + predictor, EMA target encoder + projector; no negatives."""

    contrastive = True

    def __init__(self, dim: int, hidden: Width = 128, proj_dim: Width = 64, momentum: Fraction = 0.99):
        super().__init__()
        self.proj, self.pred, self.momentum = _mlp(dim, hidden, proj_dim), _mlp(proj_dim, hidden, proj_dim), momentum
        self.target: nn.ModuleList | None = None

    def _targets(self, enc: Encoder) -> nn.ModuleList:
        if self.target is None:
            self.target = nn.ModuleList([copy.deepcopy(enc), copy.deepcopy(self.proj)]).requires_grad_(False)
        return self.target

    def forward(self, enc: Encoder, batch: dict) -> torch.Tensor:
        t_enc, t_proj = self._targets(enc)
        pa, pb = self.pred(self.proj(enc(*batch["a"]))), self.pred(self.proj(enc(*batch["b"])))
        with torch.no_grad():
            ta, tb = t_proj(t_enc(*batch["a"])), t_proj(t_enc(*batch["b"]))
        loss = _cos_loss(pa, tb) + _cos_loss(pb, ta)
        pos = batch.get("pos")
        if pos is not None:
            pos = pos & ~torch.eye(len(pos), dtype=torch.bool, device=pos.device)
            has = pos.any(1)
            if bool(has.any()):
                j = torch.where(pos, torch.rand(pos.shape, device=pos.device), -1.0).argmax(1)
                loss = loss + _cos_loss(pa[has], tb[j[has]]) + _cos_loss(pb[has], ta[j[has]])
        return loss

    def embed(self, enc: Encoder, xs: dict, vs: dict) -> torch.Tensor:
        """The space pseudo-classes are clustered in: the projector's output."""
        return self.proj(enc(xs, vs))

    @torch.no_grad()
    def after_step(self, enc: Encoder) -> None:
        """EMA of the online encoder and projector into the target."""
        t_enc, t_proj = self._targets(enc)
        for t, o in ((t_enc, enc), (t_proj, self.proj)):
            for pt, po in zip(t.parameters(), o.parameters()):
                pt.lerp_(po.detach(), 1 - self.momentum)


def _cos_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (2 - 2 * F.cosine_similarity(p, t.detach(), dim=-1)).mean()


@PRETRAIN.register("masked", help="replace a fraction of valid frames by the mask token, reconstruct their features")
class Masked(nn.Module):
    """Masked-frame feature reconstruction (the `--ssl-epochs` stage): a linear decoder per modality."""

    contrastive = False

    def __init__(self, dim: int, mask_p: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = 0.3):
        super().__init__()
        self.mask_p, self.dec = mask_p, nn.ModuleDict()

    def bind(self, enc: Encoder, in_dims: dict[str, int]) -> None:
        """Create the decoders once the encoder's widths are known."""
        self.dec = nn.ModuleDict({m: nn.Linear(enc.temporal[m].out_dim, in_dims[m]) for m in enc.modalities})

    def forward(self, enc: Encoder, batch: dict) -> torch.Tensor:
        xs, vs = batch["x"]
        drop = {m: (torch.rand(vs[m].shape, device=vs[m].device) < self.mask_p) & vs[m] for m in enc.modalities}
        seq = enc.sequence(xs, vs, drop)
        loss = torch.zeros((), device=next(iter(xs.values())).device)
        for m in enc.modalities:
            rec = self.dec[m](seq[m]).float()
            loss = loss + masked_mean(((rec - xs[m].float()) ** 2).mean(-1), drop[m])
        return loss

    def after_step(self, enc: Encoder) -> None:
        """Nothing to update outside the optimizer."""


def build_method(spec: str, dim: int) -> nn.Module:
    """A registered method from 'name' or 'name(opt=value, ...)'."""
    p = parse_part(spec)
    return PRETRAIN.build(p.name, dim, **p.opts)


def check_method(spec: str, positives: str = "none") -> None:
    """Refuse an unknown method or option, an unknown positives mode, or positives with a non-contrastive method."""
    p = parse_part(spec)
    PRETRAIN.check(p.name, p.opts)
    if positives not in POSITIVES:
        raise ValueError(f"positives must be one of {', '.join(POSITIVES)}, not {positives!r}")
    if positives != "none" and not PRETRAIN.get(p.name).contrastive:
        raise ValueError(f"pretraining method {p.name!r} has no views to add positives to; use simclr or byol")
