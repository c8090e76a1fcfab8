"""Frozen stage-1 backbones, built by one factory from a spec string `kind:name` (e.g. `clip:ViT-B-16/openai`),
optionally with the kind's options at the end: `wavlm:microsoft/wavlm-large(layer=6)`, `dinov2:facebook/dinov2-large(pool=both)`.

Adding a backbone kind = one module with a class under `@BACKBONES.register("kind")`, imported below.
"""
from __future__ import annotations

import torch

from affcli.common.registry import OptionError, UnknownNameError
from affcli.pipeline.backbones.base import (AudioBackbone, Backbone, BackboneError, CausalPlan, Steps, TextEncoder,
                                            VisualBackbone)
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.spec import SpecSyntaxError, split_spec
from affcli.pipeline.backbones import (ast, clip, dinov2, fer, hubert, opensmile_lld, timm_image,  # noqa: F401,E402
                                       vad, wav2vec2, wavlm, whisper)  # (each module registers its kind)

__all__ = ["BACKBONES", "AudioBackbone", "Backbone", "BackboneError", "CausalPlan", "Steps", "TextEncoder",
           "VisualBackbone",
           "build_backbone", "parse_spec"]


def parse_spec(spec: str) -> tuple[str, str]:
    """`"clip:ViT-B-16/openai"` -> `("clip", "ViT-B-16/openai")` (options dropped); an unknown kind raises
    UnknownNameError."""
    kind, name, _ = split_spec(spec)
    if ":" not in str(spec) or not name:
        raise UnknownNameError("backbone", str(spec), [f"{k}:<name>" for k in BACKBONES.names()])
    BACKBONES.get(kind)
    return kind, name


def build_backbone(spec: str, device: str | torch.device = "cpu", seed: int = 0, **options) -> Backbone:
    """Build the frozen backbone named by `spec` on `device`; `seed` fixes random weights (tiny, /random). Options come
    from the spec's trailing `(key=value, ...)` and `options` (which win); one the kind does not take is one line."""
    kind, _ = parse_spec(spec)
    try:
        opts = {**split_spec(spec)[2], **options}
    except SpecSyntaxError as e:
        raise BackboneError(spec, str(e).partition(": ")[2]) from None
    try:
        return BACKBONES.build(kind, spec, device, seed, **opts)
    except OptionError as e:
        e.args = (f"{spec}: {e.args[0]}",)  # one line naming the spec, still the registry's OptionError
        raise
