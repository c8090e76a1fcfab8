"""Task heads (registry TASK_HEADS): per-frame hidden [B, W, H] -> named outputs (logits or tanh VA)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from affcli.common.registry import Registry

TASK_HEADS: Registry = Registry("task head")


@dataclass(frozen=True)
class Output:
    """One predicted quantity: label key, width and kind ('class' logits, 'reg' in [-1, 1], 'multilabel' logits)."""

    key: str
    dim: int
    kind: str


TASK_OUTPUTS: dict[str, tuple[Output, ...]] = {
    "expr": (Output("expr", 8, "class"),),
    "va": (Output("va", 2, "reg"),),
    "au": (Output("au", 12, "multilabel"),),
    "mtl": (Output("va", 2, "reg"), Output("expr", 8, "class"), Output("au", 12, "multilabel")),
    "lsd": (Output("lsd", 6, "class"),),
}
DEFAULT_LOSS = {"expr": "ce(weights=auto)", "va": "ccc", "au": "bce(pos_weight=auto)",
                "mtl": "ce(weights=auto)+ccc+bce(pos_weight=auto)", "lsd": "ce(weights=auto)"}


class TaskHead(nn.Module):
    """A small MLP per output; VA passes through tanh."""

    def __init__(self, task: str, in_dim: int, hidden: tuple[int, ...] = (256,), dropout: float = 0.1):
        super().__init__()
        self.outputs = TASK_OUTPUTS[task]
        self.task = task
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


for _task, _help in (("expr", "8 expression logits"), ("va", "valence, arousal (tanh)"),
                     ("au", "12 AU logits (sigmoid)"), ("mtl", "VA + EXPR + AU, missing labels masked per task"),
                     ("lsd", "6 LSD expression logits")):
    TASK_HEADS.register(_task, help=_help, outputs=TASK_OUTPUTS[_task], default_loss=DEFAULT_LOSS[_task])(TaskHead)


def task_outputs(task: str) -> tuple[Output, ...]:
    """Outputs of a registered task (raises UnknownNameError listing the tasks)."""
    return TASK_HEADS.meta(task)["outputs"]


def to_prediction(key: str, kind: str, y: torch.Tensor) -> torch.Tensor:
    """Raw head output -> what is scored/averaged: class probabilities, VA values, AU probabilities."""
    if kind == "class":
        return torch.softmax(y.float(), -1)
    if kind == "multilabel":
        return torch.sigmoid(y.float())
    return y.float()
