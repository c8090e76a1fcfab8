"""RunConfig: one training run as a small, serialisable config (TOML/JSON file, CLI flags, ablation grids)."""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunConfig:
    """Every knob of a head run; `features=[]` means every feature set in the cache, `loss='auto'` the task default."""

    task: str = "expr"
    features: list[str] = field(default_factory=list)
    cache: str | None = None
    labels: str | None = None
    splits: list[str] = field(default_factory=lambda: ["train", "val"])
    temporal: str = "tcn"
    temporal_options: dict[str, Any] = field(default_factory=dict)
    temporal_on: list[str] = field(default_factory=list)
    fusion: str = "auto"
    fusion_options: dict[str, Any] = field(default_factory=dict)
    loss: str = "auto"
    prompts: str | None = None
    d_model: int = 128
    head_hidden: list[int] = field(default_factory=lambda: [256])
    dropout: float = 0.1
    causal: bool = False
    window: int = 32
    stride: int = 16
    label_position: str = "frame"
    dilation: int = 1
    shift: int = 0
    pool: str = "last"
    eval_stride: int | None = None
    smooth: int = 0
    batch_size: int = 64
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: float = 1.0
    grad_clip: float = 1.0
    patience: int = 5
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    frame_mask_p: float = 0.0
    frame_mask_mode: str = "token"
    ssl_epochs: int = 0
    edition: str = "abaw3+"
    name: str | None = None
    out: str = "runs/run"
    save_predictions: bool = True
    plots: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/TOML-able)."""
        return dataclasses.asdict(self)

    @staticmethod
    def fields() -> list[str]:
        """Field names."""
        return [f.name for f in dataclasses.fields(RunConfig)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Build from a dict; unknown keys and bad values are refused with a one-line ValueError."""
        unknown = [k for k in d if k not in cls.fields()]
        if unknown:
            raise ValueError(f"unknown run-config key {unknown[0]!r}; valid keys: {', '.join(cls.fields())}")
        kw = dict(d)
        for k in ("features", "splits", "head_hidden", "temporal_on"):
            if k in kw and kw[k] is not None and not isinstance(kw[k], list):
                kw[k] = list(kw[k]) if isinstance(kw[k], tuple) else [kw[k]]
        for k in ("temporal_options", "fusion_options"):
            if kw.get(k) is None:
                kw[k] = {}
            elif not isinstance(kw[k], dict):
                raise ValueError(f"run-config {k} must be a table/dict, not {type(kw[k]).__name__}")
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Cheap checks that need no data (names are checked when the model is built)."""
        if self.label_position not in ("frame", "last"):
            raise ValueError(f"label_position must be 'frame' or 'last', not {self.label_position!r}")
        for k in ("window", "stride", "batch_size", "epochs"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, not {getattr(self, k)}")
        if (self.dilation != 1 or self.shift != 0) and self.label_position != "last":
            raise ValueError("dilation and shift need label_position = 'last'")
        if not 0 <= self.frame_mask_p < 1:
            raise ValueError(f"frame_mask_p must be in [0, 1), not {self.frame_mask_p}")
        if self.edition not in ("abaw3+", "abaw1-2"):
            raise ValueError(f"edition must be 'abaw3+' or 'abaw1-2', not {self.edition!r}")
        if len(self.splits) != 2:
            raise ValueError(f"splits must be [train, val], not {self.splits}")

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> "RunConfig":
        """Read a .toml (top level or a [run] table) or .json config; `overrides` (not None) win."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"{path}: config file not found")
        try:
            raw = tomllib.loads(path.read_text()) if path.suffix.lower() == ".toml" else json.loads(path.read_text())
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot parse config: {e}") from None
        raw = raw.get("run", raw)
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.from_dict(raw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
