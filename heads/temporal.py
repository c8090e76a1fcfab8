"""Temporal heads (registry TEMPORAL): [B, W, D] -> [B, W, H]; causal ones never look at frames after t."""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from affcli.common.checks import Dropout, Heads, Layers, Range, Width
from affcli.common.registry import Registry
from affcli.heads.model.attn import MHA

TEMPORAL: Registry = Registry("temporal head", supplied=("d_in",), required=("causal",))


@TEMPORAL.register("mlp", help="per-frame MLP baseline (no context)")
class FrameMLP(nn.Module):
    """Frame-wise MLP: the no-context baseline."""

    def __init__(self, d_in: int, hidden: Width = 256, layers: Layers = 2, dropout: Dropout = 0.1,
                 causal: bool = False):
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.GELU(), nn.Dropout(dropout)]
        self.net, self.out_dim, self.causal = nn.Sequential(*mods), hidden, True

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


class _TCNBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float, causal: bool):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.causal = causal
        self.c1 = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)
        self.c2 = nn.Conv1d(c_out, c_out, kernel, dilation=dilation)
        self.drop = nn.Dropout(dropout)
        self.res = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            return F.pad(x, (self.pad, 0))
        return F.pad(x, (self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(F.gelu(self.c1(self._pad(x))))
        h = self.drop(F.gelu(self.c2(self._pad(h))))
        return F.gelu(h + self.res(x))


@TEMPORAL.register("tcn", help="dilated residual TCN (dilation 2^i; causal pads only the past)")
class TCN(nn.Module):
    """Dilated residual temporal convolutions, dilation 2^i per level."""

    def __init__(self, d_in: int, levels: Annotated[int, Range(1, 16)] = 3, channels: Width = 128,
                 kernel: Annotated[int, Range(1, 64)] = 3, dropout: Dropout = 0.1, causal: bool = False):
        super().__init__()
        self.blocks = nn.Sequential(*[_TCNBlock(d_in if i == 0 else channels, channels, kernel, 2 ** i, dropout, causal)
                                      for i in range(levels)])
        self.out_dim, self.causal = channels, causal

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.blocks(x.transpose(1, 2)).transpose(1, 2)


def _gru_rule(opts: dict[str, Any]) -> str | None:
    """A bidirectional GRU reads frames after t, so it cannot be causal."""
    if opts.get("causal") and opts.get("bidirectional"):
        return "bidirectional=True cannot be causal; set bidirectional=false or causal=false"
    return None


@TEMPORAL.register("gru", help="GRU, bi-directional unless causal (bi refused when causal)", check=_gru_rule)
class GRUHead(nn.Module):
    """Stacked GRU; bidirectional output is the concatenation of both directions."""

    def __init__(self, d_in: int, hidden: Width = 128, layers: Layers = 1, bidirectional: bool | None = None,
                 dropout: Dropout = 0.1, causal: bool = False):
        super().__init__()
        bidirectional = (not causal) if bidirectional is None else bool(bidirectional)
        if (problem := _gru_rule({"causal": causal, "bidirectional": bidirectional})) is not None:
            raise ValueError(f"gru: {problem}")
        self.gru = nn.GRU(d_in, hidden, layers, batch_first=True, bidirectional=bidirectional,
                          dropout=dropout if layers > 1 else 0.0)
        self.out_dim, self.causal = hidden * (2 if bidirectional else 1), not bidirectional

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.gru(x)[0]


def sinusoidal(n: int, dim: int, device: torch.device) -> torch.Tensor:
    """Standard sin/cos position table [n, dim]."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


class _EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.attn = MHA(dim, heads, dropout)
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None, causal: bool) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.drop(self.attn(h, h, valid, causal))
        return x + self.drop(self.ff(self.n2(x)))


def _transformer_rule(opts: dict[str, Any]) -> str | None:
    """Attention splits its width over the heads."""
    dim, heads = opts.get("dim"), opts.get("heads")
    if isinstance(dim, int) and isinstance(heads, int) and heads > 0 and dim % heads:
        return f"dim={dim} is not divisible by heads={heads}"
    return None


@TEMPORAL.register("transformer", help="pre-norm Transformer encoder (causal mask; learned or sinusoidal positions)",
                   check=_transformer_rule)
class TransformerHead(nn.Module):
    """Transformer encoder over the window; invalid frames are masked as keys."""

    def __init__(self, d_in: int, dim: Width = 128, layers: Layers = 2, heads: Heads = 4, ff: Width = 256,
                 dropout: Dropout = 0.1, causal: bool = False, positions: Literal["sinusoidal", "learned"] = "sinusoidal",
                 max_len: Annotated[int, Range(1, 1 << 20)] = 1024):
        super().__init__()
        if positions not in ("learned", "sinusoidal"):
            raise ValueError(f"transformer: positions must be 'learned' or 'sinusoidal', not {positions!r}")
        self.inp = nn.Linear(d_in, dim)
        self.pos = nn.Parameter(torch.zeros(max_len, dim)) if positions == "learned" else None
        self.layers = nn.ModuleList([_EncoderLayer(dim, heads, ff, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.out_dim, self.causal, self.max_len = dim, causal, max_len

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        W = x.shape[1]
        if self.pos is not None and W > self.max_len:
            raise ValueError(f"transformer: window {W} exceeds max_len={self.max_len} of learned positions")
        pe = self.pos[:W] if self.pos is not None else sinusoidal(W, self.out_dim, x.device)
        h = self.inp(x) + pe.to(x.dtype)
        for layer in self.layers:
            h = layer(h, valid, self.causal)
        return self.norm(h)


def build_temporal(name: str, d_in: int, **opts) -> nn.Module:
    """Instantiate a registered temporal head; unknown options are refused with the valid ones."""
    return TEMPORAL.build(name, d_in, **opts)
