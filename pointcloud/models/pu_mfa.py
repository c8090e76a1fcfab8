"""PU-MFA-style upsampler: dense EdgeConv features, multi-scale attention in a U-Net, expansion, residual coordinates.

Only the outline is public (arXiv 2208.10968: multi-scale features + attention 'GCRA' merged through a U-Net);
every block below is our design, and each choice is a PUMFAConfig option for ablation (docs/pointcloud_models.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from affcli.pointcloud.models.layers import (
    ChannelAttention,
    CrossResolutionAttention,
    DenseEdgeBlock,
    ScaleAttention,
    SelfAttention,
    interpolate,
    knn_idx,
    mlp,
)
from affcli.pointcloud.models.prior import PRIORS, prior_points
from affcli.pointcloud.ops import farthest_point_sample, gather_points, knn

KEEP_PRIOR_LOGIT = 4.0  # an untrained keep head trusts every output (sigmoid 0.98): the merge drops nothing


@dataclass
class PUMFAConfig:
    """Hyper-parameters of PU-MFA (ours where the paper is silent); training defaults follow the paper."""

    ratio: int = 4
    dim: int = 96
    edge_k: int = 16
    dense_layers: int = 3
    growth: int = 32
    dynamic_graph: bool = False
    levels: int = 2
    level_stride: int = 2
    scales: tuple[int, ...] = (8, 16, 32)
    fusion: str = "attention"
    heads: int = 4
    channel_attention: bool = True
    global_attention: bool = True
    self_attention: bool = True
    downsample: str = "fps"
    expansion: str = "codes"
    code_dim: int = 32
    residual: bool = True
    prior: str = "none"
    offset_bound: float = 0.0
    prior_features: bool = False
    pin_input: bool = False
    keep_score: bool = False

    def __post_init__(self) -> None:
        self.scales = tuple(int(s) for s in self.scales)
        checks = {
            "fusion": (self.fusion, ("attention", "concat", "max")),
            "downsample": (self.downsample, ("fps", "random", "stride")),
            "expansion": (self.expansion, ("codes", "shuffle")),
            "prior": (self.prior, PRIORS),
        }
        for name, (val, ok) in checks.items():
            if val not in ok:
                raise ValueError(f"pu-mfa: {name} must be one of {ok}, got {val!r}")
        if self.prior_features and self.prior == "none":
            raise ValueError("pu-mfa: prior_features needs a prior (prior=midpoint or phong)")
        if self.pin_input and self.prior == "none" and not self.residual:
            raise ValueError("pu-mfa: pin_input needs a prior or residual offsets (copy 0 is the input point)")
        if self.offset_bound < 0:
            raise ValueError(f"pu-mfa: offset_bound must be >= 0 (0: unbounded), got {self.offset_bound}")
        if self.ratio < 2 or self.levels < 0 or self.level_stride < 2 or not self.scales:
            raise ValueError("pu-mfa: need ratio >= 2, levels >= 0, level_stride >= 2 and at least one scale")


class MultiScaleDown(nn.Module):
    """One encoder level: sample centres, group kNN neighbourhoods at each scale, fuse the scales."""

    def __init__(self, cfg: PUMFAConfig):
        super().__init__()
        c = cfg.dim
        self.cfg = cfg
        self.branches = nn.ModuleList(mlp([c + 3, c, c]) for _ in cfg.scales)
        self.centre = nn.Linear(c, c)
        if cfg.fusion == "attention":
            self.fuse: nn.Module = ScaleAttention(c, cfg.heads)
        elif cfg.fusion == "concat":
            self.fuse = mlp([c * len(cfg.scales), c])
        self.gate = ChannelAttention(c) if cfg.channel_attention else nn.Identity()

    def sample(self, xyz: Tensor) -> Tensor:
        """Indices [B,M] of the level's centres."""
        b, n, _ = xyz.shape
        m = max(1, n // self.cfg.level_stride)
        if self.cfg.downsample == "fps":
            with torch.autocast(xyz.device.type, enabled=False):
                return farthest_point_sample(xyz.float(), m)
        if self.cfg.downsample == "stride":
            return torch.arange(0, m * self.cfg.level_stride, self.cfg.level_stride, device=xyz.device).expand(b, m)
        return torch.rand(b, n, device=xyz.device).argsort(-1)[:, :m]

    def forward(self, xyz: Tensor, feat: Tensor) -> tuple[Tensor, Tensor]:
        idx = self.sample(xyz)
        ctr_xyz, ctr_feat = gather_points(xyz, idx), gather_points(feat, idx)
        kmax = min(max(self.cfg.scales), xyz.shape[1])
        nb = knn_idx(ctr_xyz, xyz, kmax)
        grouped = torch.cat([gather_points(feat, nb), gather_points(xyz, nb) - ctr_xyz.unsqueeze(2)], -1)
        tokens = [br(grouped[:, :, : min(s, kmax)]).amax(2) for br, s in zip(self.branches, self.cfg.scales)]
        if self.cfg.fusion == "attention":
            out = self.fuse(self.centre(ctr_feat), torch.stack(tokens, 2))
        elif self.cfg.fusion == "concat":
            out = self.fuse(torch.cat(tokens, -1))
        else:
            out = torch.stack(tokens, 2).amax(2)
        return ctr_xyz, self.gate(out)


@torch.no_grad()
def spacing(xyz: Tensor) -> Tensor:
    """Each point's nearest-neighbour distance [B,N,1] (float32, no autograd)."""
    with torch.autocast(xyz.device.type, enabled=False):
        return knn(xyz.float(), xyz.float(), 2)[0][..., 1:].sqrt().clamp_min(1e-6)


class PUMFA(nn.Module):
    """[B,N,3] -> [B,N*r,3]; the r outputs of input point i are rows i*r..i*r+r-1 (the upsampler relies on it)."""

    def __init__(self, cfg: PUMFAConfig):
        super().__init__()
        self.cfg, self.ratio = cfg, cfg.ratio
        c = cfg.dim
        self.extract = DenseEdgeBlock(3, cfg.growth, cfg.dense_layers, c, cfg.edge_k, cfg.dynamic_graph)
        self.down = nn.ModuleList(MultiScaleDown(cfg) for _ in range(cfg.levels))
        self.up = nn.ModuleList(mlp([2 * c, c, c]) for _ in range(cfg.levels))
        self.glob = CrossResolutionAttention(c, cfg.heads) if cfg.global_attention and cfg.levels else None
        self.self_attn = SelfAttention(c, cfg.heads) if cfg.self_attention else None
        if cfg.expansion == "codes":
            self.codes = nn.Parameter(torch.randn(cfg.ratio, cfg.code_dim) * 0.5)
            self.expand = mlp([c + cfg.code_dim, c, c])
        else:
            self.expand = mlp([c, c * cfg.ratio])
        self.head = mlp([c + 3 * cfg.prior_features, 64, 3], last_act=False)
        if cfg.prior != "none":
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
        self.last_scores: Tensor | None = None
        self.last_spacing: Tensor | None = None
        if cfg.keep_score:  # logit: does this output lie on the surface? (the merge drops those it doubts)
            self.keeper = mlp([c + 3 * cfg.prior_features, 64, 1], last_act=False)
            nn.init.zeros_(self.keeper[-1].weight)
            nn.init.constant_(self.keeper[-1].bias, KEEP_PRIOR_LOGIT)

    def forward(self, xyz: Tensor) -> Tensor:
        b, n, _ = xyz.shape
        feat = self.extract(xyz, xyz)
        pyramid = [(xyz, feat)]
        for down in self.down:
            pyramid.append(down(*pyramid[-1]))
        x_c, f_c = pyramid[-1]
        if self.self_attn is not None:
            f_c = self.self_attn(x_c, f_c)
        for lvl in range(len(self.down), 0, -1):
            x_f, f_skip = pyramid[lvl - 1]
            f_c = self.up[lvl - 1](torch.cat([interpolate(x_f, x_c, f_c), f_skip], -1))
            x_c = x_f
        if self.glob is not None:
            x_kv = torch.cat([p[0] for p in pyramid[1:]], 1)
            f_kv = torch.cat([p[1] for p in pyramid[1:]], 1)
            f_c = self.glob(xyz, f_c, x_kv, f_kv)
        r = self.ratio
        if self.cfg.expansion == "codes":
            codes = self.codes.to(f_c.dtype).expand(b, n, r, -1)
            up = self.expand(torch.cat([f_c.unsqueeze(2).expand(b, n, r, -1), codes], -1))
        else:
            up = self.expand(f_c).view(b, n, r, -1)
        prior = prior_points(xyz.float(), r, self.cfg.prior) if self.cfg.prior != "none" else None
        step = spacing(xyz) if self.cfg.offset_bound > 0 or self.cfg.prior_features or self.cfg.keep_score else None
        if self.cfg.prior_features:  # where each copy starts, in units of the point's spacing
            rel = (prior - xyz.unsqueeze(2).float()) / step.unsqueeze(-1)
            up = torch.cat([up, rel.to(up.dtype)], -1)
        out = self.head(up).float()
        if self.cfg.offset_bound > 0:  # at most offset_bound x the spacing: learning cannot make far outliers
            out = torch.tanh(out) * (self.cfg.offset_bound * step).unsqueeze(-1)
        if self.cfg.pin_input:  # copy 0 stays the measured point: the head moves only the new points
            out = torch.cat([torch.zeros_like(out[:, :, :1]), out[:, :, 1:]], 2)
        if self.cfg.keep_score:
            self.last_scores = self.keeper(up.detach()).float().reshape(b, n * r)  # a probe: the trunk learns coordinates
            self.last_spacing = step.expand(b, n, r).reshape(b, n * r)
        if prior is not None:
            out = out + prior
        elif self.cfg.residual:
            out = out + xyz.unsqueeze(2).float()
        return out.reshape(b, n * r, 3)
