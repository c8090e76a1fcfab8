"""Per-dimension standardisation of a head's inputs with statistics of the training split's valid frames, stored in
the model as buffers: the checkpoint carries them, so predict, evaluate, stream, ensembles and distillation teachers
apply them through the same model without any other code knowing.

Hand-crafted feature sets mix wildly different scales (eGeMAPS: F0 in semitones around 40-60 beside loudness near
0-1) and the projection takes raw features; z-scoring makes every dimension count. Invalid frames (no face, no audio,
nobody speaking) become 0 after it, the training mean, instead of a far-off raw zero.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

STD_FLOOR = 1e-6
ROWS_PER_PASS = 1 << 16


class Standardize(nn.Module):
    """x -> (x - mean) / std per input dimension (float32); rows marked invalid -> 0."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        y = (x.float() - self.mean) / self.std
        if valid is not None:
            y = torch.where(valid.unsqueeze(-1), y, y.new_zeros(()))
        return y

    @torch.no_grad()
    def fit(self, x: torch.Tensor, valid: torch.Tensor) -> int:
        """Set mean/std (population, float64 sums in passes of ROWS_PER_PASS rows) from the rows of x [T, D] where
        valid [T]; constant dimensions keep std 1. Returns the number of rows used (no valid row: identity)."""
        d = x.shape[1]
        s1 = torch.zeros(d, dtype=torch.float64, device=x.device)
        s2 = torch.zeros(d, dtype=torch.float64, device=x.device)
        n = 0
        for i in range(0, x.shape[0], ROWS_PER_PASS):
            part = x[i:i + ROWS_PER_PASS][valid[i:i + ROWS_PER_PASS]].double()
            s1 += part.sum(0)
            s2 += (part * part).sum(0)
            n += part.shape[0]
        if n == 0:
            self.mean.zero_()
            self.std.fill_(1.0)
            return 0
        mean = s1 / n
        std = (s2 / n - mean * mean).clamp_min(0).sqrt()
        self.mean.copy_(mean.float())
        self.std.copy_(torch.where(std > STD_FLOOR, std, torch.ones_like(std)).float())
        return n


class Projection(nn.Sequential):
    """A modality's input projection: [optional Standardize] -> Linear -> LayerNorm. The Linear and LayerNorm keep
    their state-dict names `0` and `1`, so checkpoints written before standardisation existed still load."""

    def __init__(self, d_in: int, d_model: int, standardize: bool):
        mods: OrderedDict[str, nn.Module] = OrderedDict()
        if standardize:
            mods["norm"] = Standardize(d_in)
        mods["0"] = nn.Linear(d_in, d_model)
        mods["1"] = nn.LayerNorm(d_model)
        super().__init__(mods)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        norm = self._modules.get("norm")
        if norm is not None:
            x = norm(x, valid)
        return self._modules["1"](self._modules["0"](x))


@torch.no_grad()
def fit_inputs(proj: nn.ModuleDict, feats: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
               rows: torch.Tensor) -> dict[str, int]:
    """Fit every standardising projection of `proj` on `rows` (the training split) of the modality's features, valid
    frames only; returns {modality: frames used}."""
    used = {}
    for m, p in proj.items():
        norm = p._modules.get("norm") if isinstance(p, Projection) else None
        if norm is not None:
            r = rows.to(feats[m].device)
            used[m] = norm.fit(feats[m][r], valid[m][r])
    return used
