"""The head model: per-modality projection -> temporal head -> fusion -> task head, built from names."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from affcli.common.cli_options import option
from affcli.heads.fusion import FUSION, fusion_modalities
from affcli.heads.spec import parse_part
from affcli.heads.task_head import TaskHead
from affcli.heads.tasks import task_outputs
from affcli.heads.temporal import build_temporal


@dataclass
class ModelSpec:
    """The head architecture, `[model]` of a run config; with the task and input widths it rebuilds a model."""

    temporal: str = option("tcn", help="Temporal head: a registered name with options, e.g. 'tcn(levels=6, channels=512)'.")
    temporal_options: dict[str, Any] = option({}, help="Options of the temporal head (merged over the inline ones).")
    temporal_on: list[str] = option([], help="Modalities that get the temporal head (visual, audio); the others only "
                                            "their projection.", shown="all")
    fusion: str = option("auto", help="Fusion, e.g. xattn or none:visual (auto = none for one modality, else concat).")
    fusion_options: dict[str, Any] = option({}, help="Options of the fusion (merged over the inline ones).")
    d_model: int = option(128, help="Width each modality is projected to.")
    head_hidden: list[int] = option([256], help="Hidden widths of the task head's MLP.")
    dropout: float = option(0.1, help="Dropout of the task head.")
    causal: bool = option(False, help="Never use frames after t (temporal heads and cross-attention).")
    label_position: str = option("frame", help="frame (every frame of the window) or last (the last frame's label).")
    pool: str = option("last", help="With label_position=last: last (output at the last frame) or mean (time-mean).")
    dilation: int = option(1, help="With label_position=last: frames between window samples.")
    shift: int = option(0, help="With label_position=last: frames between the window's end and the labelled frame.")
    frame_mask_p: float = option(0.0, help="Augmentation: fraction of window frames masked (train only).")
    frame_mask_mode: str = option("token", help="Masked frames become a learned token (token) or zeros (zero).")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        """Build from a dict (a [model] table, or a checkpoint's spec); unknown keys refused with the valid ones."""
        names = [f.name for f in fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ValueError(f"unknown model key {unknown[0]!r}; valid keys: {', '.join(names)}")
        kw = dict(d)
        for k in ("head_hidden", "temporal_on"):
            if k in kw and not isinstance(kw[k], list):
                kw[k] = list(kw[k]) if isinstance(kw[k], tuple) else [kw[k]]
        for k in ("temporal_options", "fusion_options"):
            if kw.get(k) is None:
                kw[k] = {}
            elif not isinstance(kw[k], dict):
                raise ValueError(f"model {k} must be a table/dict, not {type(kw[k]).__name__}")
        spec = cls(**kw)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Value checks that need no registry or data."""
        if self.label_position not in ("frame", "last"):
            raise ValueError(f"label_position must be 'frame' or 'last', not {self.label_position!r}")
        if self.pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', not {self.pool!r}")
        if self.frame_mask_mode not in ("zero", "token"):
            raise ValueError(f"frame_mask_mode must be 'zero' or 'token', not {self.frame_mask_mode!r}")
        if not 0 <= self.frame_mask_p < 1:
            raise ValueError(f"frame_mask_p must be in [0, 1), not {self.frame_mask_p}")
        if (self.dilation != 1 or self.shift != 0) and self.label_position != "last":
            raise ValueError("dilation and shift need label_position = 'last'")
        bad = [m for m in self.temporal_on if m not in ("visual", "audio")]
        if bad:
            raise ValueError(f"temporal_on: unknown modality {bad[0]!r}; use visual and/or audio")


class Passthrough(nn.Module):
    """No temporal model for a modality (e.g. the seed's audio adapter is its projection alone)."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim, self.causal = dim, True

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return x


def _split_part(text: str, opts: dict) -> tuple[str, str | None, dict]:
    p = parse_part(text)
    return p.name, p.arg, {**p.opts, **(opts or {})}


class HeadModel(nn.Module):
    """Maps {modality: [B, W, D_m]} (+ validity) to task outputs per frame ([B, W, k]) or per window ([B, k])."""

    def __init__(self, spec: ModelSpec, task: str, in_dims: dict[str, int]):
        super().__init__()
        spec.validate()
        if spec.fusion == "auto":
            spec = replace(spec, fusion="none" if len(in_dims) == 1 else "concat")
        self.spec, self.task, self.in_dims = spec, task, dict(in_dims)
        t_name, _, t_opts = _split_part(spec.temporal, spec.temporal_options)
        f_name, f_arg, f_opts = _split_part(spec.fusion, spec.fusion_options)
        if f_arg is not None:
            f_opts.setdefault("modality", f_arg)
        FUSION.check(f_name, f_opts)
        t_opts.setdefault("causal", spec.causal)
        f_opts.setdefault("causal", spec.causal)
        self.modalities = fusion_modalities(f_name, f_opts.get("modality"), list(in_dims))
        for m in self.modalities:
            if m not in in_dims:
                raise ValueError(f"fusion {spec.fusion}: no {m} features given (have {', '.join(in_dims)})")
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(in_dims[m], spec.d_model), nn.LayerNorm(spec.d_model))
                                   for m in self.modalities})
        self.mask_token = nn.ParameterDict({m: nn.Parameter(torch.zeros(spec.d_model)) for m in self.modalities})
        on = spec.temporal_on or self.modalities
        self.temporal = nn.ModuleDict({m: build_temporal(t_name, spec.d_model, **t_opts) if m in on
                                       else Passthrough(spec.d_model) for m in self.modalities})
        dims = {m: self.temporal[m].out_dim for m in self.modalities}
        self.fusion = FUSION.build(f_name, dims, **f_opts)
        self.head = TaskHead(task, self.fusion.out_dim, tuple(spec.head_hidden), spec.dropout)
        self.outputs = task_outputs(task)
        self.causal = all(t.causal for t in self.temporal.values()) and self.fusion.causal
        self.feat_modality = "visual" if "visual" in self.modalities else self.modalities[0]
        self.feat_dim = dims[self.feat_modality]

    def record(self) -> dict[str, Any]:
        """What a checkpoint stores to rebuild this model: task, input widths and the spec's fields (one flat dict)."""
        return {"task": self.task, "in_dims": self.in_dims, **self.spec.to_dict()}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> "HeadModel":
        """Rebuild (untrained) from `record()`, including records written before the spec was nested."""
        return cls(ModelSpec.from_dict({k: v for k, v in d.items() if k not in ("task", "in_dims")}), d["task"], d["in_dims"])

    def embed(self, xs: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality projection with optional random frame masking (training only)."""
        out = {}
        for m in self.modalities:
            h = self.proj[m](xs[m])
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
