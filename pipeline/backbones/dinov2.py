"""DINOv2 image embeddings of face crops (ABAW10's strongest visual features), with the checkpoint's own processor settings.

Spec forms after `dinov2:`: a hub name (`facebook/dinov2-large`, `-base`, `-small`, `-giant`), a local
`save_pretrained` folder, or `tiny` (random weights from `configs/dinov2-tiny.json`); option `pool`: `cls` (the
final-layer-normed CLS token), `mean` (mean of the patch tokens) or `both` (the two concatenated, twice the width).
Preprocessing follows the folder's image processor (resize the shortest edge, centre crop, rescale, normalise),
done batched on the device; without one, the DINOv2 defaults (256 -> 224, ImageNet mean/std, bicubic).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from affcli.common.device import autocast
from affcli.pipeline.backbones.base import BackboneError, VisualBackbone
from affcli.pipeline.backbones.hub import tiny_or_pretrained
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.spec import spec_name
POOLS = ("cls", "mean", "both")
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL codes of the processor's `resample`


def _size(d: Any, key: str) -> int | None:
    v = d.get(key) if isinstance(d, dict) else getattr(d, key, None)
    return int(v) if v else None


def processor_settings(proc: Any, default_crop: int) -> dict[str, Any]:
    """The resize / crop / rescale / normalise settings of a transformers image processor (or the DINOv2 defaults)."""
    if proc is None:
        return {"resize_shortest_edge": round(default_crop * 256 / 224), "crop": default_crop, "resample": "bicubic",
                "rescale": 1 / 255, "mean": IMAGENET[0], "std": IMAGENET[1]}
    size, crop = getattr(proc, "size", None) or {}, getattr(proc, "crop_size", None) or {}
    short = _size(size, "shortest_edge") or _size(size, "height")
    side = _size(crop, "height") if getattr(proc, "do_center_crop", False) else None
    if _size(crop, "height") != _size(crop, "width") and side:
        raise ValueError(f"non-square crop {dict(crop)} is not supported for square face crops")
    return {"resize_shortest_edge": short if getattr(proc, "do_resize", True) else None, "crop": side,
            "resample": RESAMPLE.get(int(getattr(proc, "resample", 3) or 3), "bicubic"),
            "rescale": float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else 1.0,
            "mean": [float(v) for v in proc.image_mean] if getattr(proc, "do_normalize", True) else [0.0] * 3,
            "std": [float(v) for v in proc.image_std] if getattr(proc, "do_normalize", True) else [1.0] * 3}


@BACKBONES.register("dinov2", modality="visual", example="dinov2:facebook/dinov2-large",
                    help="DINOv2 image tower: hub name (small/base/large/giant), local folder, tiny; pool=cls|mean|both")
class Dinov2Backbone(VisualBackbone):
    """Dinov2Model on square face crops; the CLS token, the mean patch token, or both."""

    library = "transformers"

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0, pool: str = "cls"):
        super().__init__(spec, device, seed)
        from transformers import AutoImageProcessor, Dinov2Config, Dinov2Model

        if pool not in POOLS:
            raise BackboneError(spec, f"pool must be one of {', '.join(POOLS)}, not {pool!r}")
        name = spec_name(spec)
        model, proc = tiny_or_pretrained(spec, seed, Dinov2Model, Dinov2Config, AutoImageProcessor, "dinov2-tiny.json")
        c = model.config
        try:
            self.pre = processor_settings(proc, int(c.image_size) if name == "tiny" else 224)
        except ValueError as e:
            raise BackboneError(spec, str(e)) from None
        self.model = self._freeze(model)
        self.pool = pool
        self.width = int(c.hidden_size)
        self.dim = 2 * self.width if pool == "both" else self.width
        self.n_registers = int(getattr(c, "num_register_tokens", 0) or 0)
        self.input_size = int(self.pre["crop"] or self.pre["resize_shortest_edge"] or c.image_size)
        self._mean = torch.tensor(self.pre["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.pre["std"], device=self.device).view(1, 3, 1, 1)

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def preprocessing(self) -> dict[str, Any]:
        return {**self.pre, "input_size": self.input_size, "pool": self.pool,
                "output": {"cls": "pooler_output (layer-normed CLS)", "mean": "mean of patch tokens",
                           "both": "[CLS | mean of patch tokens]"}[self.pool]}

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = self._as_nchw(frames).float()
        short = self.pre["resize_shortest_edge"]
        if short and x.shape[-1] != short:
            mode = self.pre["resample"]
            x = torch.nn.functional.interpolate(x, size=(short, short), mode=mode, antialias=mode != "nearest",
                                                **({} if mode == "nearest" else {"align_corners": False}))
            x = x.clamp_(0, 255)
        crop = self.pre["crop"]
        if crop and x.shape[-1] != crop:
            top = (x.shape[-1] - crop) // 2
            x = x[..., top:top + crop, top:top + crop]
        return (x * self.pre["rescale"] - self._mean) / self._std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device):
            h = self.model(pixel_values=x.to(self.device)).last_hidden_state
            cls, patches = h[:, 0], h[:, 1 + self.n_registers:]
            if self.pool == "cls":
                out = cls
            elif self.pool == "mean":
                out = patches.mean(1)
            else:
                out = torch.cat([cls, patches.mean(1)], 1)
        return out.float().cpu()
