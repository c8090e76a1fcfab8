"""RunConfig: one training run as a small, serialisable config (TOML/JSON file, CLI flags, ablation grids)."""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affcli.common.cli_options import option
from affcli.heads.model import ModelSpec

MODEL = "model"
MODEL_KEYS = [f.name for f in dataclasses.fields(ModelSpec)]


def resolve_path(p: str | None) -> str | None:
    """An absolute local path (URLs such as s3://... and None unchanged)."""
    return p if p is None or "://" in p else str(Path(p).expanduser().resolve())


@dataclass
class RunConfig:
    """Every knob of a head run; the head architecture is the nested `model` ([model] table, ModelSpec)."""

    task: str = option("expr", help="Task.")
    features: list[str] = option([], short="-f", shown="all in the cache",
                                 help="Feature set, repeatable; its modality (visual/audio) is read from the cache.")
    cache: str | None = option(None, help="Feature cache (Zarr) written by `affcli extract`.")
    labels: str | None = option(None, help="Labels: the ABAW annotation folder or a challenge folder (a Train_Set/"
                                           "Validation_Set parent); a flat folder of txt files is one split (evaluate).")
    splits: list[str] = option(["train", "val"], help="The train and the validation split (give both).")
    model: ModelSpec = option(ModelSpec, help="The head architecture.")
    loss: str = option("auto", help="Loss: a weighted sum such as 'ce(weights=auto)+0.1*text-contrastive'; auto = task default.")
    prompts: str | None = option(None, help="Prompt set the prompt-based losses read.", shown="each loss's own")
    window: int = option(32, help="Window length in frames.")
    stride: int = option(16, help="Window stride in frames.")
    eval_stride: int | None = option(None, help="Stride of the overlapping evaluation windows.", shown="window / 2")
    smooth: int = option(0, help="Average predictions over +-N frames per video before scoring.")
    batch_size: int = option(64, help="Windows per step.")
    epochs: int = option(20, help="Maximum epochs.")
    lr: float = option(1e-3, help="AdamW learning rate (cosine schedule).")
    weight_decay: float = option(1e-2, help="AdamW weight decay.")
    warmup: float = option(1.0, help="Linear warm-up, in epochs.")
    grad_clip: float = option(1.0, help="Gradient-norm clip (0 = off).")
    patience: int = option(5, help="Early stopping: epochs without a better val metric.")
    seed: int = option(0, help="Seed.")
    device: str = option("auto", help="auto, cpu, cuda, cuda:1.")
    amp: bool = option(True, help="bf16 autocast on CUDA.")
    ssl_epochs: int = option(0, help="Masked-frame reconstruction pretraining epochs (0 = off).")
    edition: str = option("abaw3+", help="Metrics edition: abaw3+ or abaw1-2.")
    name: str | None = option(None, help="Run name.", shown="the --out folder's name")
    out: str = option("runs/run", help="Run folder (config, metrics, checkpoint, predictions, plots).")
    save_predictions: bool = option(True, help="Write predictions_val.parquet.")
    plots: bool = option(True, help="Write curves and confusion/VA plots.")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/TOML-able): the architecture under 'model'."""
        return dataclasses.asdict(self)

    @staticmethod
    def fields() -> list[str]:
        """Top-level field names ('model' is a table)."""
        return [f.name for f in dataclasses.fields(RunConfig)]

    @staticmethod
    def keys() -> list[str]:
        """Flat key names: the top-level fields and the model's (what CLI flags and ablation grid axes name)."""
        return [k for k in RunConfig.fields() if k != MODEL] + MODEL_KEYS

    @classmethod
    def nest(cls, d: dict[str, Any]) -> dict[str, Any]:
        """The one mapping of flat model keys (`d_model = 64`, as in old configs, grids and CLI flags) into the
        `model` table; a key given both ways must agree."""
        out = {k: v for k, v in d.items() if k not in MODEL_KEYS}
        model = out.get(MODEL) or {}
        if isinstance(model, ModelSpec):
            model = model.to_dict()
        if not isinstance(model, dict):
            raise ValueError(f"run-config model must be a table/dict, not {type(model).__name__}")
        model = dict(model)
        for k in MODEL_KEYS:
            if k in d:
                if k in model and model[k] != d[k]:
                    raise ValueError(f"run-config {k} is given twice ({d[k]!r} and model.{k} = {model[k]!r})")
                model[k] = d[k]
        if model or MODEL in out:
            out[MODEL] = model
        return out

    @classmethod
    def flatten(cls, d: dict[str, Any]) -> dict[str, Any]:
        """The inverse of `nest`: the model table's keys at top level (the one namespace grids and flags use)."""
        n = cls.nest(d)
        return {**{k: v for k, v in n.items() if k != MODEL}, **n.get(MODEL, {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Build from a nested or flat dict; unknown keys and bad values are refused with a one-line ValueError."""
        kw = cls.nest(d)
        unknown = [k for k in kw if k not in cls.fields()]
        if unknown:
            raise ValueError(f"unknown run-config key {unknown[0]!r}; valid keys: {', '.join(cls.keys())}")
        for k in ("features", "splits"):
            if k in kw and kw[k] is not None and not isinstance(kw[k], list):
                kw[k] = list(kw[k]) if isinstance(kw[k], tuple) else [kw[k]]
        kw[MODEL] = ModelSpec.from_dict(kw.get(MODEL) or {})
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Cheap checks that need no data (names are checked when the model is built)."""
        for k in ("window", "stride", "batch_size", "epochs"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, not {getattr(self, k)}")
        self.model.validate()
        if self.edition not in ("abaw3+", "abaw1-2"):
            raise ValueError(f"edition must be 'abaw3+' or 'abaw1-2', not {self.edition!r}")
        if len(self.splits) != 2:
            raise ValueError(f"splits must be [train, val], not {self.splits}")

    def with_resolved_paths(self) -> "RunConfig":
        """A copy whose cache and labels are absolute (what a run folder stores, so it works from any directory)."""
        return dataclasses.replace(self, cache=resolve_path(self.cache), labels=resolve_path(self.labels))

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> "RunConfig":
        """Read a .toml (top level or a [run] table) or .json config, nested or flat; `overrides` (flat or nested keys,
        not None) win."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"{path}: config file not found")
        try:
            raw = tomllib.loads(path.read_text()) if path.suffix.lower() == ".toml" else json.loads(path.read_text())
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot parse config: {e}") from None
        try:
            raw = cls.nest(raw.get("run", raw))
            over = cls.nest({k: v for k, v in overrides.items() if v is not None})
            if MODEL in over:
                over[MODEL] = {**(raw.get(MODEL) or {}), **over[MODEL]}
            return cls.from_dict({**raw, **over})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
