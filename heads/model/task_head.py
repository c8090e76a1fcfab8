"""The task head module: per-frame hidden [B, W, H] -> one small MLP per output of the task record (VA via tanh)."""
from __future__ import annotations

import torch
from torch import nn

from affcli.heads.tasks import Task, get_task


class TaskHead(nn.Module):
    """A small MLP per output of a task; 'reg' outputs pass through tanh, the others are logits."""

    def __init__(self, task: Task | str, in_dim: int, hidden: tuple[int, ...] = (256,), dropout: float = 0.1):
        super().__init__()
        record = get_task(task) if isinstance(task, str) else task
        self.task, self.outputs = record.name, record.outputs
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
