"""The head model: per-modality projection -> temporal head -> fusion -> task head, built from names."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from affcli.heads.config import ModelSpec
from affcli.heads.fusion import FUSION
from affcli.heads.model.standardize import Projection, fit_inputs
from affcli.heads.tasks import TASKS
from affcli.heads.temporal import TEMPORAL


class Passthrough(nn.Module):
    """No temporal model for a modality (e.g. the seed's audio adapter is its projection alone)."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim, self.causal = dim, True

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return x


class HeadModel(nn.Module):
    """Maps {modality: [B, W, D_m]} (+ validity) to task outputs per frame ([B, W, k]) or per window ([B, k])."""

    def __init__(self, spec: ModelSpec, task: str, in_dims: dict[str, int]):
        super().__init__()
        spec.validate()
        parts = spec.resolve(list(in_dims))
        spec = replace(spec, fusion=parts.fusion_text)
        self.spec, self.task, self.in_dims = spec, task, dict(in_dims)
        self.modalities = parts.modalities
        self.proj = nn.ModuleDict({m: Projection(in_dims[m], spec.d_model, spec.standardize) for m in self.modalities})
        self.mask_token = nn.ParameterDict({m: nn.Parameter(torch.zeros(spec.d_model)) for m in self.modalities})
        on = spec.temporal_on or self.modalities
        t = parts.temporal
        self.temporal = nn.ModuleDict({m: TEMPORAL.build(t.name, spec.d_model, **t.opts) if m in on
                                       else Passthrough(spec.d_model) for m in self.modalities})
        dims = {m: self.temporal[m].out_dim for m in self.modalities}
        self.fusion = FUSION.build(parts.fusion.name, dims, **parts.fusion.opts)
        self.head = TASKS.build(task, self.fusion.out_dim, tuple(spec.head_hidden), spec.dropout)
        self.outputs = self.head.outputs
        self.causal = all(t.causal for t in self.temporal.values()) and self.fusion.causal
        self.feat_modality = "visual" if "visual" in self.modalities else self.modalities[0]
        self.feat_dim = dims[self.feat_modality]

    def record(self) -> dict[str, Any]:
        """What a checkpoint stores to rebuild this model: task, input widths and the spec's fields (one flat dict)."""
        return {"task": self.task, "in_dims": self.in_dims, **self.spec.to_dict()}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> "HeadModel":
        """Rebuild (untrained) from `record()`, including records written before the spec was nested, and before
        inputs were standardised (no `standardize` key: no standardisation, as those checkpoints were trained)."""
        spec = {"standardize": False, **{k: v for k, v in d.items() if k not in ("task", "in_dims")}}
        return cls(ModelSpec.from_dict(spec), d["task"], d["in_dims"])

    def fit_inputs(self, feats: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                   rows: torch.Tensor) -> dict[str, int]:
        """Standardisation statistics from `rows` (the training split's rows), valid frames only; a no-op when the
        spec's `standardize` is off. Returns {modality: frames used}."""
        return fit_inputs(self.proj, feats, valid, rows)

    def embed(self, xs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality projection with optional random frame masking (training only)."""
        out = {}
        for m in self.modalities:
            h = self.proj[m](xs[m], valid.get(m))
            if self.training and self.spec.frame_mask_p > 0:
                drop = torch.rand(h.shape[:2], device=h.device) < self.spec.frame_mask_p
                fill = self.mask_token[m].to(h.dtype) if self.spec.frame_mask_mode == "token" else h.new_zeros(())
                h = torch.where(drop.unsqueeze(-1), fill, h)
            out[m] = h
        return out

    def sequence(self, xs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality temporal features [B, W, H] (before fusion)."""
        e = self.embed(xs, valid)
        return {m: self.temporal[m](e[m], valid.get(m)) for m in self.modalities}

    def forward(self, xs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                real: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Outputs per label key plus 'feat' (the visual branch, or the only branch) for auxiliary losses."""
        hs = self.sequence(xs, valid)
        fused = self.fusion(hs, valid)
        feat = hs[self.feat_modality]
        if self.spec.label_position == "last":
            if self.spec.pool == "mean":
                w = (real if real is not None else torch.ones(fused.shape[:2], dtype=torch.bool, device=fused.device))
                w = w.unsqueeze(-1).to(fused.dtype)
                n = w.sum(1).clamp_min(1)
                fused, feat = (fused * w).sum(1) / n, (feat * w).sum(1) / n
            else:
                fused, feat = fused[:, -1], feat[:, -1]
        out = self.head(fused)
        out["feat"] = feat
        return out
