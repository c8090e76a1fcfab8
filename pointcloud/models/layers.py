"""Building blocks of the upsampling networks on channels-last point features [B,N,C]."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from affcli.pointcloud.ops import gather_points, knn


def mlp(dims: list[int], last_act: bool = True) -> nn.Sequential:
    """Per-point Linear layers with LeakyReLU(0.2) between them (and after the last one if last_act)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if last_act or i < len(dims) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def knn_idx(query: Tensor, ref: Tensor, k: int) -> Tensor:
    """kNN indices [B,M,k] computed in float32 outside autocast (bf16 distances would misorder neighbours)."""
    with torch.autocast(query.device.type, enabled=False):
        return knn(query.float(), ref.float(), k)[1]


def interpolate(xyz_to: Tensor, xyz_from: Tensor, feat_from: Tensor, k: int = 3) -> Tensor:
    """Features of xyz_from [B,M,C] carried to xyz_to [B,N,3] by inverse-distance weights of the k nearest."""
    k = min(k, xyz_from.shape[1])
    with torch.autocast(xyz_to.device.type, enabled=False):
        d2, idx = knn(xyz_to.float(), xyz_from.float(), k)
    w = 1.0 / (d2 + 1e-8)
    w = (w / w.sum(-1, keepdim=True)).to(feat_from.dtype)
    return (gather_points(feat_from, idx) * w.unsqueeze(-1)).sum(2)


class EdgeConv(nn.Module):
    """DGCNN edge convolution: max over neighbours of MLP([f_i, f_j - f_i])."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.mlp = mlp([2 * c_in, c_out, c_out])

    def forward(self, feat: Tensor, idx: Tensor) -> Tensor:
        nb = gather_points(feat, idx)
        ctr = feat.unsqueeze(2).expand_as(nb)
        return self.mlp(torch.cat([ctr, nb - ctr], -1)).amax(2)


class DenseEdgeBlock(nn.Module):
    """Densely connected EdgeConvs (each sees the concatenation of all earlier outputs), then a fusing MLP."""

    def __init__(self, c_in: int, growth: int, layers: int, c_out: int, k: int, dynamic: bool):
        super().__init__()
        self.k, self.dynamic = k, dynamic
        self.convs = nn.ModuleList(EdgeConv(c_in + i * growth, growth) for i in range(layers))
        self.out = mlp([c_in + layers * growth, c_out])

    def forward(self, xyz: Tensor, feat: Tensor) -> Tensor:
        k = min(self.k, xyz.shape[1])
        idx = knn_idx(xyz, xyz, k)
        feats = [feat]
        for i, conv in enumerate(self.convs):
            cur = torch.cat(feats, -1)
            if self.dynamic and i > 0:
                idx = _feature_knn(cur, k)
            feats.append(conv(cur, idx))
        return self.out(torch.cat(feats, -1))


@torch.no_grad()
def _feature_knn(feat: Tensor, k: int) -> Tensor:
    """kNN indices [B,N,k] in feature space (dynamic graph)."""
    f = feat.float()
    sq = (f * f).sum(-1)
    d2 = sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * f @ f.transpose(1, 2)
    return d2.topk(k, dim=-1, largest=False).indices


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over channels: features gated by sigmoid(MLP(max-pool over points))."""

    def __init__(self, c: int, reduction: int = 4):
        super().__init__()
        self.gate = nn.Sequential(mlp([c, max(4, c // reduction)]), nn.Linear(max(4, c // reduction), c), nn.Sigmoid())

    def forward(self, feat: Tensor) -> Tensor:
        return feat * self.gate(feat.amax(1, keepdim=True))


class ScaleAttention(nn.Module):
    """Cross-attention of a centre-point query over its S scale tokens [B,M,S,C] (multi-head, softmax over S)."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.h = heads if c % heads == 0 else 1
        self.q, self.k, self.v, self.o = (nn.Linear(c, c) for _ in range(4))
        self.last_weights: Tensor | None = None

    def forward(self, query: Tensor, tokens: Tensor) -> Tensor:
        b, m, s, c = tokens.shape
        d = c // self.h
        q = self.q(query).view(b, m, 1, self.h, d)
        k = self.k(tokens).view(b, m, s, self.h, d)
        v = self.v(tokens).view(b, m, s, self.h, d)
        w = ((q * k).sum(-1) / d**0.5).softmax(2)
        self.last_weights = w.detach()
        return query + self.o((w.unsqueeze(-1) * v).sum(2).reshape(b, m, c))


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention among a level's points (xyz positional encoding), plus an FFN."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.pos = nn.Linear(3, c)
        self.norm, self.norm_f = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = nn.MultiheadAttention(c, heads if c % heads == 0 else 1, batch_first=True)
        self.ffn = mlp([c, 2 * c, c], last_act=False)
        self.last_weights: Tensor | None = None

    def forward(self, xyz: Tensor, feat: Tensor) -> Tensor:
        x = self.norm(feat + self.pos(xyz))
        out, w = self.attn(x, x, x, need_weights=not self.training)
        self.last_weights = None if w is None else w.detach()
        feat = feat + out
        return feat + self.ffn(self.norm_f(feat))


class CrossResolutionAttention(nn.Module):
    """Pre-norm multi-head cross-attention of fine points over tokens from all coarser levels, plus an FFN."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.pos = nn.Linear(3, c)
        self.norm_q, self.norm_kv, self.norm_f = nn.LayerNorm(c), nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = nn.MultiheadAttention(c, heads if c % heads == 0 else 1, batch_first=True)
        self.ffn = mlp([c, 2 * c, c], last_act=False)
        self.last_weights: Tensor | None = None

    def forward(self, xyz: Tensor, feat: Tensor, xyz_kv: Tensor, feat_kv: Tensor) -> Tensor:
        q = self.norm_q(feat + self.pos(xyz))
        kv = self.norm_kv(feat_kv + self.pos(xyz_kv))
        out, w = self.attn(q, kv, kv, need_weights=not self.training)
        self.last_weights = None if w is None else w.detach()
        feat = feat + out
        return feat + self.ffn(self.norm_f(feat))
