"""Any timm image model (EfficientNet, ConvNeXt, ViT/MAE, ...) as a face embedder: how a user brings EmotiEffNet /
HSEmotion-style face models or a network of their own.

Spec forms after `timm:`
- `<model>/<checkpoint>`: a timm architecture and a weights file, e.g. `timm:efficientnet_b0//data/enet_b0_8.pt`:
  `.safetensors`, or a state dict read with `torch.load(weights_only=True)` (`state_dict` / `model` / EMA wrappers
  and `module.` prefixes are unwrapped by timm). A pickled whole model is refused in one line that says how to
  convert it. A `config.json` with a `pretrained_cfg` beside the file (timm's hub layout) sets the data config.
- `<model>/random`: the architecture with seeded random weights (speed benchmarks); `tiny` = `test_efficientnet/random`.
- `<model>`: timm's own pretrained weights (from the hub, or its local cache when the hub does not answer).
Options: `logits` appends the classifier's outputs (e.g. an emotion model's class logits) to the pooled features.
Preprocessing is the model's timm data config (input size, crop_pct, interpolation, mean/std), done batched on the
device: resize to input_size / crop_pct, centre crop (or squash), normalise.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affcli.common.device import autocast
from affcli.pipeline.backbones.base import BackboneError, VisualBackbone, seeded_build
from affcli.pipeline.backbones.hub import download_guarded
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.spec import spec_name

RANDOM_TAG = "random"
TINY_MODEL = "test_efficientnet"
CONVERT_HINT = ("convert it once, where you trust the file, to a state dict: python -c \"import torch; "
                "m = torch.load('IN', weights_only=False); torch.save(m.state_dict(), 'OUT.pt')\"")


class PickledModelError(ValueError):
    """A checkpoint that holds a pickled module (code), not tensors."""


def split_timm_name(name: str) -> tuple[str, str | None]:
    """`efficientnet_b0//data/w.pt` -> (`efficientnet_b0`, `/data/w.pt`); `vit_base_patch16_224/random` ->
    (..., `random`); `convnext_tiny` -> (..., None); `tiny` -> (test_efficientnet, random)."""
    if name == "tiny":
        return TINY_MODEL, RANDOM_TAG
    model, sep, rest = name.partition("/")
    return model, (rest if sep and rest else None)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, or a state dict by `torch.load(weights_only=True)` (timm unwraps
    the usual wrappers); a pickled whole model raises PickledModelError."""
    import pickle

    from timm.models import load_state_dict

    try:
        sd = load_state_dict(str(path), use_ema=True, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as e:
        text = str(e)
        if not isinstance(e, pickle.UnpicklingError) and "weights_only" not in text and "Weights only" not in text:
            raise
        raise PickledModelError(f"{path} is a pickled whole model (or holds objects other than tensors), which is "
                                f"not loaded because unpickling runs code; {CONVERT_HINT}") from e
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise PickledModelError(f"{path}: entry {bad[0]!r} is not a tensor; {CONVERT_HINT}")
    return sd


def data_config_beside(path: Path) -> dict[str, Any] | None:
    """The `pretrained_cfg` of a timm hub-style `config.json` next to the checkpoint, if there is one."""
    cfg = path.parent / "config.json"
    if not cfg.is_file():
        return None
    try:
        d = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return d.get("pretrained_cfg") if isinstance(d, dict) else None


@BACKBONES.register("timm", modality="visual", example="timm:efficientnet_b0//data/enet_b0_8.safetensors",
                    help="any timm image model: <model>/<checkpoint file>, <model>/random, <model> (timm weights), "
                         "tiny; logits=true appends the classifier outputs")
class TimmBackbone(VisualBackbone):
    """A timm model's pooled pre-logits features (plus its logits with `logits=True`)."""

    library = "timm"

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0, logits: bool = False):
        super().__init__(spec, device, seed)
        import timm
        from timm.data import resolve_data_config

        model_name, source = split_timm_name(spec_name(spec))
        if not timm.is_model(model_name):
            raise BackboneError(spec, f"timm has no model {model_name!r} (see timm.list_models())")
        self.model_name, self.source, self.logits = model_name, source, bool(logits)
        pretrained_cfg = None
        try:
            if source == RANDOM_TAG:
                model = seeded_build(seed, lambda: timm.create_model(model_name, pretrained=False))
            elif source is None:
                model = download_guarded(spec, f"timm weights of {model_name}",
                                         lambda: timm.create_model(model_name, pretrained=True))
            else:
                path = Path(source).expanduser()
                if not path.is_file():
                    raise FileNotFoundError(f"checkpoint not found: {path}")
                sd = read_state_dict(path)
                pretrained_cfg = data_config_beside(path)
                model = self._from_state_dict(timm, model_name, sd)
        except BackboneError:
            raise
        except (PickledModelError, FileNotFoundError) as e:
            raise BackboneError(spec, str(e)) from None
        except Exception as e:  # noqa: BLE001 - every load failure becomes one line naming the spec
            raise BackboneError(spec, f"cannot load timm {model_name}: {type(e).__name__}: "
                                      f"{(str(e).splitlines() or [''])[0][:300]}") from e
        self.data = resolve_data_config(pretrained_cfg or {}, model=model) if pretrained_cfg else \
            resolve_data_config({}, model=model)
        self.model = self._freeze(model)
        self.n_features = int(model.num_features)
        self.n_logits = int(getattr(model, "num_classes", 0) or 0) if self.logits else 0
        if self.logits and not self.n_logits:
            raise BackboneError(spec, "logits=true, but the model has no classifier (its checkpoint holds none)")
        self.dim = self.n_features + self.n_logits
        self.input_size = int(self.data["input_size"][-1])
        if self.data["input_size"][-1] != self.data["input_size"][-2]:
            raise BackboneError(spec, f"non-square input {self.data['input_size']} is not supported for face crops")
        mode = self.data.get("crop_mode", "center")
        if mode not in ("center", "squash"):
            raise BackboneError(spec, f"crop_mode {mode!r} is not supported (center or squash)")
        self._mean = torch.tensor(self.data["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.data["std"], device=self.device).view(1, 3, 1, 1)

    @staticmethod
    def _from_state_dict(timm, model_name: str, sd: dict[str, torch.Tensor]) -> torch.nn.Module:
        """The architecture with as many classes as the checkpoint's classifier (none when it has none), loaded
        strictly: a tensor that does not fit is an error, never a silent random weight."""
        probe = timm.create_model(model_name, pretrained=False, num_classes=0)
        head = probe.pretrained_cfg.get("classifier") or probe.default_cfg.get("classifier")
        heads = head if isinstance(head, (list, tuple)) else [head]
        n = next((int(sd[f"{h}.weight"].shape[0]) for h in heads if h and f"{h}.weight" in sd), 0)
        model = probe if n == 0 else timm.create_model(model_name, pretrained=False, num_classes=n)
        own = model.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        shapes = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
        if missing or unexpected or shapes:
            said = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                    (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if v]
            raise ValueError(f"the checkpoint's weights do not fit timm {model_name}: {', '.join(said)}")
        model.load_state_dict(sd, strict=True)
        return model

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def preprocessing(self) -> dict[str, Any]:
        d = self.data
        return {"input_size": self.input_size, "interpolation": d["interpolation"], "crop_pct": float(d["crop_pct"]),
                "crop_mode": d.get("crop_mode", "center"), "mean": [float(v) for v in d["mean"]],
                "std": [float(v) for v in d["std"]], "model": self.model_name,
                "weights": self.source or "timm pretrained",
                "output": "pre-logits pooled features" + (" | logits" if self.logits else "")}

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = self._as_nchw(frames).float().div_(255.0)
        size = self.input_size
        squash = self.data.get("crop_mode", "center") == "squash"
        scale = size if squash else int(math.floor(size / float(self.data["crop_pct"])))
        mode = self.data["interpolation"] if self.data["interpolation"] in ("bilinear", "bicubic", "nearest") \
            else "bilinear"
        if x.shape[-1] != scale:
            x = torch.nn.functional.interpolate(x, size=(scale, scale), mode=mode, antialias=mode != "nearest",
                                                **({} if mode == "nearest" else {"align_corners": False})).clamp_(0, 1)
        if scale != size:
            top = (scale - size) // 2
            x = x[..., top:top + size, top:top + size]
        return (x - self._mean) / self._std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device):
            f = self.model.forward_features(x.to(self.device))
            pooled = self.model.forward_head(f, pre_logits=True)
            out = torch.cat([pooled, self.model.get_classifier()(pooled)], 1) if self.logits else pooled
        return out.float().cpu()
