"""PU-Net-style baseline (Yu et al. 2018): multi-level PointNet++ features, r separate expansion branches, coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from affcli.pointcloud.models.layers import interpolate, knn_idx, mlp
from affcli.pointcloud.ops import farthest_point_sample, gather_points


@dataclass
class PUNetConfig:
    """PU-Net hyper-parameters: levels at N, N/2, N/4, N/8 (the paper's 4 levels), k-NN grouping in place of balls."""

    ratio: int = 4
    levels: int = 4
    dim: int = 64
    k: int = 32
    branch_dims: tuple[int, ...] = (256, 128)
    residual: bool = False

    def __post_init__(self) -> None:
        self.branch_dims = tuple(int(d) for d in self.branch_dims)
        if self.ratio < 2 or self.levels < 1:
            raise ValueError("pu-net: need ratio >= 2 and levels >= 1")


class PUNet(nn.Module):
    """[B,N,3] -> [B,N*r,3]: point i's r outputs (one per branch) are rows i*r..i*r+r-1."""

    def __init__(self, cfg: PUNetConfig):
        super().__init__()
        self.cfg, self.ratio = cfg, cfg.ratio
        c = cfg.dim
        self.sa = nn.ModuleList(mlp([3 + (3 if i == 0 else c), c, c, c]) for i in range(cfg.levels))
        self.proj = nn.ModuleList(nn.Linear(c, c) for _ in range(cfg.levels))
        c_cat = 3 + cfg.levels * c
        self.branches = nn.ModuleList(mlp([c_cat, *cfg.branch_dims]) for _ in range(cfg.ratio))
        self.head = mlp([cfg.branch_dims[-1], 64, 3], last_act=False)

    def forward(self, xyz: Tensor) -> Tensor:
        b, n, _ = xyz.shape
        x, f = xyz, xyz
        feats = []
        for i, sa in enumerate(self.sa):
            m = max(1, n >> i)
            if m < x.shape[1]:
                with torch.autocast(xyz.device.type, enabled=False):
                    idx = farthest_point_sample(x.float(), m)
                cx = gather_points(x, idx)
            else:
                cx = x
            nb = knn_idx(cx, x, min(self.cfg.k, x.shape[1]))
            grouped = torch.cat([gather_points(f, nb), gather_points(x, nb) - cx.unsqueeze(2)], -1)
            x, f = cx, sa(grouped).amax(2)
            feats.append(self.proj[i](interpolate(xyz, x, f) if x.shape[1] != n else f))
        cat = torch.cat([xyz, *feats], -1)
        up = torch.stack([br(cat) for br in self.branches], 2)
        out = self.head(up).float()
        if self.cfg.residual:
            out = out + xyz.unsqueeze(2).float()
        return out.reshape(b, n * self.ratio, 3)
