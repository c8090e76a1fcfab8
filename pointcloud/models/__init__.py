"""Upsampling networks by name: MODELS registry, create_model(name, ratio, **overrides), config round-trip."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from affcli.common.registry import Registry
from affcli.pointcloud.errors import PointCloudError
from affcli.pointcloud.models.pu_mfa import PUMFA, PUMFAConfig
from affcli.pointcloud.models.pu_net import PUNet, PUNetConfig

MODELS: Registry = Registry("point-cloud model")
# options whose default changed after checkpoints were written without them: a stored spec lacking one was built
# with the old value
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"pu-mfa": {"self_attention": False}}
MODELS.register("pu-mfa", config=PUMFAConfig, help="PU-MFA-style: dense EdgeConv, multi-scale attention U-Net")(PUMFA)
MODELS.register("pu-net", config=PUNetConfig, help="PU-Net-style baseline: multi-level features, r branches")(PUNet)


def config_class(name: str) -> type:
    """The config dataclass of a registered model."""
    return MODELS.meta(name)["config"]


def create_model(name: str, ratio: int = 4, **overrides: Any) -> nn.Module:
    """Build a registered model for `ratio` with config overrides (unknown keys are a one-line error)."""
    cls = config_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise PointCloudError(f"{name}: unknown option(s) {', '.join(bad)}; valid: {', '.join(sorted(fields))}")
    try:
        cfg = cls(**{**overrides, "ratio": int(ratio)})
    except (TypeError, ValueError) as e:
        raise PointCloudError(str(e)) from None
    model = MODELS.get(name)(cfg)
    model.model_name = name
    return model


def model_spec(model: nn.Module) -> dict[str, Any]:
    """JSON-able {'name', 'config'} that create_model can rebuild the model from."""
    cfg = dataclasses.asdict(model.cfg)
    return {"name": model.model_name, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}}


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild an (untrained) model from model_spec output (options it lacks take their value of that time)."""
    cfg = LEGACY_DEFAULTS.get(spec["name"], {}) | dict(spec["config"])
    return create_model(spec["name"], cfg.pop("ratio"), **cfg)
