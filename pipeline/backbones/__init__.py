"""Frozen stage-1 backbones, built by one factory from a spec string `kind:name` (e.g. `clip:ViT-B-16/openai`).

Adding a backbone kind = one module with a class under `@BACKBONES.register("kind")`, imported below.
"""
from __future__ import annotations

import torch

from affcli.common.registry import UnknownNameError
from affcli.pipeline.backbones.base import (AudioBackbone, Backbone, BackboneError, CausalPlan, Steps, TextEncoder,
                                            VisualBackbone)
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones import ast, clip, fer, wav2vec2  # noqa: F401,E402  (each module registers its kind)

__all__ = ["BACKBONES", "AudioBackbone", "Backbone", "BackboneError", "CausalPlan", "Steps", "TextEncoder",
           "VisualBackbone",
           "build_backbone", "parse_spec"]


def parse_spec(spec: str) -> tuple[str, str]:
    """`"clip:ViT-B-16/openai"` -> `("clip", "ViT-B-16/openai")`; an unknown kind raises UnknownNameError."""
    kind, sep, name = str(spec).partition(":")
    if not sep or not name:
        raise UnknownNameError("backbone", str(spec), [f"{k}:<name>" for k in BACKBONES.names()])
    BACKBONES.get(kind)
    return kind, name


def build_backbone(spec: str, device: str | torch.device = "cpu", seed: int = 0, **options) -> Backbone:
    """Build the frozen backbone named by `spec` on `device`; `seed` fixes random weights (tiny, /random)."""
    kind, _ = parse_spec(spec)
    return BACKBONES.build(kind, spec, device, seed, **options)
