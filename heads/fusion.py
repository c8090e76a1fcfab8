"""Fusions (registry FUSION): combine per-modality sequences {visual, audio: [B, W, H]} into one [B, W, H'].

A fusion that needs given modalities declares them at registration (`needs=`); heads.parts checks them against
the run's features before anything is built, so grids and train-head refuse such a run before loading data.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from affcli.cache.fingerprint import MODALITIES
from affcli.common.checks import Dropout, Heads, Width
from affcli.common.registry import Registry
from affcli.heads.model.attn import MHA
from affcli.heads.spec import parse_part
from affcli.heads.temporal import sinusoidal

FUSION: Registry = Registry("fusion", supplied=("dims",), required=("causal",))


def group_features(specs: list[str], modality: Mapping[str, str]) -> dict[str, list[str]]:
    """Feature specs grouped by their modality (as recorded in the cache's fingerprints), in the order given."""
    out: dict[str, list[str]] = {}
    for s in specs:
        if s not in modality:
            raise ValueError(f"feature set {s!r}: no modality recorded with its features; "
                             f"record one with `affcli cache set-modality CACHE {s} visual|audio`")
        out.setdefault(modality[s], []).append(s)
    return out


@FUSION.register("none", help="one modality only (none:visual / none:audio)")
class NoFusion(nn.Module):
    """Pass one modality through (the only one present, or the one named)."""

    def __init__(self, dims: dict[str, int], causal: bool = False, modality: str | None = None):
        super().__init__()
        if modality is None:
            if len(dims) != 1:
                raise ValueError(f"fusion none: several modalities ({', '.join(dims)}); choose none:visual or none:audio")
            modality = next(iter(dims))
        if modality not in dims:
            raise ValueError(f"fusion none:{modality}: no {modality} features given (have {', '.join(dims) or 'none'})")
        self.modality, self.out_dim, self.modalities, self.causal = modality, dims[modality], (modality,), True

    def forward(self, h: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> torch.Tensor:
        return h[self.modality]


@FUSION.register("concat", help="concatenate modalities, then a linear layer", needs=MODALITIES)
class ConcatFusion(nn.Module):
    """Per-frame concatenation of all modalities, projected to `dim`."""

    def __init__(self, dims: dict[str, int], causal: bool = False, dim: Width = 128, dropout: Dropout = 0.1):
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in dims)
        self.proj = nn.Sequential(nn.Linear(sum(dims[m] for m in self.modalities), dim), nn.GELU(), nn.Dropout(dropout))
        self.out_dim, self.causal = dim, True

    def forward(self, h: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.proj(torch.cat([h[m] for m in self.modalities], -1))


def _same_dim(name: str, dims: dict[str, int]) -> int:
    if dims["visual"] != dims["audio"]:
        raise ValueError(f"fusion {name}: visual dim {dims['visual']} != audio dim {dims['audio']}")
    return dims["visual"]


@FUSION.register("xattn", help="bi-directional cross-attention (V->A, A->V), residual + LayerNorm, concatenated",
                 needs=MODALITIES)
class CrossAttention(nn.Module):
    """Visual queries audio and audio queries visual (symmetric), each residual + LayerNorm, then concatenated."""

    def __init__(self, dims: dict[str, int], causal: bool = False, heads: Heads = 4, dropout: Dropout = 0.1,
                 positions: bool = True):
        super().__init__()
        d = _same_dim("xattn", dims)
        self.positions = bool(positions)
        self.v2a, self.a2v = MHA(d, heads, dropout), MHA(d, heads, dropout)
        self.nv, self.na = nn.LayerNorm(d), nn.LayerNorm(d)
        self.out_dim, self.causal, self.modalities = 2 * d, causal, MODALITIES

    def forward(self, h: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> torch.Tensor:
        v, a = h["visual"], h["audio"]
        pe = sinusoidal(v.shape[1], v.shape[2], v.device) if self.positions else None
        v2 = self.nv(v + self.v2a(v, a, valid.get("audio"), self.causal, pe))
        a2 = self.na(a + self.a2v(a, v, valid.get("visual"), self.causal, pe))
        return torch.cat([v2, a2], -1)


@FUSION.register("xattn-gated",
                 help="image queries audio, then gate g = sigmoid(MLP(attended, image)), g*att + (1-g)*image",
                 needs=MODALITIES)
class GatedCrossAttention(nn.Module):
    """Image-queries-audio cross-attention, then a learned per-frame gate between the attended audio and the image."""

    def __init__(self, dims: dict[str, int], causal: bool = False, heads: Heads = 4, dropout: Dropout = 0.1,
                 hidden: Width = 128, positions: bool = True):
        super().__init__()
        d = _same_dim("xattn-gated", dims)
        self.positions = bool(positions)
        self.attn = MHA(d, heads, dropout)
        self.gate = nn.Sequential(nn.Linear(2 * d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.out_dim, self.causal, self.modalities = d, causal, MODALITIES

    def forward(self, h: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> torch.Tensor:
        v = h["visual"]
        pe = sinusoidal(v.shape[1], v.shape[2], v.device) if self.positions else None
        att = self.attn(v, h["audio"], valid.get("audio"), self.causal, pe)
        g = torch.sigmoid(self.gate(torch.cat([att, v], -1)))
        return g * att + (1 - g) * v


def fusion_options(text: str, extra: Mapping | None = None) -> tuple[str, dict]:
    """A fusion spec -> (name, options): the one place that reads `none:visual`'s `:arg` as its `modality` option;
    `extra` (the run's fusion_options) wins over the spec's own options."""
    p = parse_part(text)
    return p.name, {**({"modality": p.arg} if p.arg is not None else {}), **p.opts, **(extra or {})}


def fusion_modalities(name: str, arg: str | None, present: list[str]) -> tuple[str, ...]:
    """Modalities a fusion consumes (so the model only builds the branches it uses)."""
    if name == "none":
        if arg:
            return (arg,)
        return tuple(present[:1]) if len(present) == 1 else tuple(present)
    return tuple(m for m in MODALITIES if m in present) or tuple(present)
