"""The one resolution of a run's named parts: task, temporal head, fusion, loss terms and pretraining method.

`auto` is resolved, `name:arg(key=value)` strings are parsed, names and options are checked against the
registries (options come from each part's signature), and the fusion is checked against the modalities of the
run's features when they are known. train-head (before any data is loaded), the model (HeadModel), pretraining and
ablation-grid validation all call these functions, so they give one verdict on the same names.

Errors: a registry's own UnknownNameError / OptionError (they list the valid names or options), or a PartError
naming the config field for problems no registry sees (a `:arg` a part does not take, missing modalities).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from affcli.cache.fingerprint import MODALITIES
from affcli.heads.fusion import FUSION, fusion_modalities, fusion_options, group_features
from affcli.heads.losses import check_loss
from affcli.heads.spec import PartSpec, parse_part
from affcli.heads.tasks import TASKS, Task
from affcli.heads.temporal import TEMPORAL
from affcli.heads.train.ssl_methods import check_method

if TYPE_CHECKING:
    from affcli.heads.config import ModelSpec, RunConfig

AUTO = ("", "auto", None)


class PartError(ValueError):
    """A part the registries cannot refuse by themselves: `field` is the config key, `valid` the choices if any."""

    def __init__(self, field: str, problem: str, valid: Sequence[str] | None = None):
        self.field, self.problem, self.valid = field, problem, list(valid) if valid is not None else None
        tail = f"; valid: {', '.join(self.valid)}" if self.valid is not None else ""
        super().__init__(f"{problem}{tail}")


@dataclass(frozen=True)
class Part:
    """A resolved part: its registered name and every option it is built with."""

    name: str
    opts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelParts:
    """What HeadModel builds: the temporal head, the fusion (None while `auto` has no modalities to decide on) and
    the modalities that get a branch (None when the features' modalities are not known)."""

    temporal: Part
    fusion: Part | None
    fusion_text: str
    modalities: tuple[str, ...] | None


@dataclass(frozen=True)
class RunParts:
    """Every named part of a run, resolved."""

    task: Task
    model: ModelParts
    loss: list[tuple[float, PartSpec]]


def resolve_temporal(text: str, options: Mapping[str, Any] | None = None, causal: bool = False) -> Part:
    """`tcn(levels=3)` + the run's temporal_options (which win) -> Part; `causal` is passed unless given."""
    p = parse_part(text)
    if p.arg is not None:
        raise PartError("temporal", f"temporal head {p.name!r} takes no ':{p.arg}' argument")
    opts = {**p.opts, **(options or {})}
    opts.setdefault("causal", causal)
    TEMPORAL.check(p.name, opts)
    return Part(p.name, opts)


def resolve_fusion(text: str, options: Mapping[str, Any] | None = None, causal: bool = False,
                   present: Sequence[str] | None = None) -> tuple[Part | None, str, tuple[str, ...] | None]:
    """A fusion spec -> (Part, the spec with `auto` decided, the modalities it consumes); `present` are the
    modalities of the run's features (None: unknown, so `auto` stays undecided and modalities are not checked)."""
    if text in AUTO:
        if present is None:
            return None, "auto", None
        text = "none" if len(present) == 1 else "concat"
    name, opts = fusion_options(text, options)
    if "modality" in opts and opts["modality"] not in MODALITIES:
        raise PartError("fusion", f"unknown modality {opts['modality']!r}", MODALITIES)
    opts.setdefault("causal", causal)
    FUSION.check(name, opts)
    if present is None:
        return Part(name, opts), text, None
    if name == "none" and "modality" not in opts and len(present) != 1:
        raise PartError("fusion", f"fusion none: several modalities ({', '.join(present)}); choose "
                                  f"none:{' or none:'.join(present)}")
    used = fusion_modalities(name, opts.get("modality"), list(present))
    needs = tuple(FUSION.meta(name).get("needs", ()))
    missing = [m for m in dict.fromkeys((*used, *needs)) if m not in present]
    if missing:
        raise PartError("fusion", f"fusion {text} needs {' and '.join(dict.fromkeys((*needs, *used)))} features; "
                                  f"missing {', '.join(missing)} (the run's features are {', '.join(present) or 'none'}"
                                  f"; give e.g. --features clip:... --features wav2vec2:...)")
    return Part(name, opts), text, tuple(used)


def resolve_model(spec: ModelSpec, present: Sequence[str] | None = None) -> ModelParts:
    """The temporal head and fusion of a model spec, checked against the modalities `present` when known."""
    temporal = resolve_temporal(spec.temporal, spec.temporal_options, spec.causal)
    fusion, text, used = resolve_fusion(spec.fusion, spec.fusion_options, spec.causal, present)
    return ModelParts(temporal, fusion, text, used)


def resolve_loss(text: str | None, task: str | None = None) -> list[tuple[float, PartSpec]]:
    """A loss sum (`auto` = the task's default; nothing to check without a task) -> [(weight, term)], every term's
    name and options checked (losses.check_loss, what building the loss does too)."""
    if text in AUTO:
        if task is None:
            return []
        text = TASKS.get(task).default_loss
    return check_loss(str(text))


def resolve_run(cfg: RunConfig, modalities: Mapping[str, str] | None = None) -> RunParts:
    """Every part of a run; `modalities` ({feature set: modality}, from the cache's fingerprints or the loaded data)
    lets the fusion be checked against the run's features."""
    task = TASKS.get(cfg.task)
    present = None
    if modalities is not None:
        present = list(group_features(list(cfg.features) or list(modalities), modalities))
    model = resolve_model(cfg.model, present)
    loss = resolve_loss(cfg.loss, cfg.task)
    check_method(cfg.ssl_method, cfg.ssl_positives)
    return RunParts(task, model, loss)
