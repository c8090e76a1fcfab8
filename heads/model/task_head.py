"""The task head module: per-frame hidden [B, W, H] -> one small MLP per output of a task record (VA via tanh).
Built by calling the record (`TASKS.build(name, in_dim, hidden, dropout)`), so this module needs no task table."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from affcli.heads.tasks import Task


class TaskHead(nn.Module):
    """A small MLP per output of a task; 'reg' outputs pass through tanh, the others are logits."""

    def __init__(self, task: Task, in_dim: int, hidden: tuple[int, ...] = (256,), dropout: float = 0.1):
        super().__init__()
        self.task, self.outputs = task.name, task.outputs
        nets = {}
        for o in self.outputs:
            layers: list[nn.Module] = []
            d = in_dim
            for h in hidden:
                layers += [nn.Linear(d, h), nn.GELU(), nn.Dropout(dropout)]
                d = h
            nets[o.key] = nn.Sequential(*layers, nn.Linear(d, o.dim))
        self.nets = nn.ModuleDict(nets)

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for o in self.outputs:
            y = self.nets[o.key](h)
            out[o.key] = torch.tanh(y) if o.kind == "reg" else y
        return out
