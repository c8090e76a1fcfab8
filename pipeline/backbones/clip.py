"""CLIP image tower (face crops -> embeddings) and text tower (prompt sets), loaded by open_clip.

Spec forms after `clip:`
- `<model>/<tag>`: open_clip model name + pretrained tag, e.g. `ViT-B-16/openai`, `ViT-L-14/laion2b_s32b_b82k`.
- `<model>/random`: the real architecture with random weights (seeded), no download; for speed benchmarks.
- `<model>/<path>`: a checkpoint file for that architecture, e.g. `ViT-B-16//data/ckpt.pt`.
- `/path/ckpt.pt`: a checkpoint file with `open_clip_config.json` beside it.
- `local-dir:/path`: an open_clip folder (`open_clip_config.json` + weights).
- `tiny`: a small random-weight ViT CLIP from `configs/clip-tiny.json`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affcli.common.device import autocast
from affcli.pipeline.backbones.base import BackboneError, VisualBackbone, hub_offline, seeded_build
from affcli.pipeline.backbones.hub import download_guarded
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.spec import spec_name

CONFIG_DIR = Path(__file__).parent / "configs"
TINY_MODEL = "clip-tiny"
RANDOM_TAG = "random"


def register_tiny_config() -> None:
    """Make `clip-tiny` known to open_clip (idempotent)."""
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR / f"{TINY_MODEL}.json")


def _resolve(name: str) -> tuple[str, str | None]:
    """Spec tail -> (open_clip model name, pretrained tag / checkpoint path / None for random weights)."""
    if name == "tiny":
        return TINY_MODEL, None
    if name.startswith("local-dir:"):
        folder = Path(name.partition(":")[2]).expanduser()
        if folder.is_dir() and not any(folder.glob(p) for p in ("*.safetensors", "*.bin", "*.pth", "*.pt")):
            raise FileNotFoundError(f"no weights (*.safetensors, *.bin, *.pth) in {folder}")
        return name, None
    if name.startswith(("/", ".", "~")) or Path(name).is_file():
        ckpt = Path(name).expanduser()
        cfg = ckpt.parent / "open_clip_config.json"
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint not found: {ckpt}")
        if not cfg.is_file():
            raise FileNotFoundError(f"no open_clip_config.json beside {ckpt}; use clip:<model>/<checkpoint path>")
        return f"local-dir:{ckpt.parent}", str(ckpt)
    model, _, tag = name.partition("/")
    if not tag:
        raise ValueError(f"expected <model>/<pretrained tag or path>, e.g. ViT-B-16/openai; got {name!r}")
    return model, None if tag == RANDOM_TAG else tag


@BACKBONES.register("clip", modality="visual", example="clip:ViT-B-16/openai",
                    help="open_clip image tower: <model>/<tag|path|random>, local-dir:/path, /path/ckpt.pt, tiny")
class ClipBackbone(VisualBackbone):
    """open_clip image embeddings (projected, not L2-normalised) of face crops, plus `encode_text` for prompt sets."""

    library = "open_clip"

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(spec, device, seed)
        import open_clip

        register_tiny_config()
        name = spec_name(spec)
        try:
            model_name, pretrained = _resolve(name)
            self.model_name = model_name
            if model_name.startswith("local-dir:") and pretrained:
                model = self._from_config_and_checkpoint(model_name, pretrained)
            else:
                if not pretrained:
                    logging.disable(logging.WARNING)  # open_clip warns that random weights are random: we asked for them
                try:
                    def build():
                        return seeded_build(seed, lambda: open_clip.create_model(
                            model_name, pretrained=pretrained, load_weights=True, cache_dir=None,
                            **({"require_pretrained": True} if pretrained else {"pretrained_text": False})))
                    remote = pretrained and not Path(pretrained).expanduser().is_file()
                    model = download_guarded(spec, f"open_clip {model_name}/{pretrained}", build) if remote else build()
                finally:
                    logging.disable(logging.NOTSET)
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except BackboneError:
            raise
        except Exception as e:  # noqa: BLE001 - every load failure becomes one line naming the spec
            remote = not name.startswith(("local-dir:", "/", ".", "~", "tiny")) and not name.endswith("/" + RANDOM_TAG)
            hint = " (hub access is disabled: HF_HUB_OFFLINE)" if hub_offline() and remote else ""
            raise BackboneError(spec, f"cannot load open_clip model: {type(e).__name__}: {e}{hint}") from e
        self.model = self._freeze(model)
        self.pre_cfg = dict(open_clip.get_model_preprocess_cfg(model))
        size = self.pre_cfg.get("size", model.visual.image_size)
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self._mean = torch.tensor(self.pre_cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.pre_cfg["std"], device=self.device).view(1, 3, 1, 1)
        out_dim = getattr(model.visual, "output_dim", None)
        self.dim = int(out_dim) if out_dim else int(self.embed(self.preprocess(
            np.zeros((1, self.input_size, self.input_size, 3), np.uint8))).shape[1])
        self.pretrained = pretrained

    def _from_config_and_checkpoint(self, model_name: str, ckpt: str) -> torch.nn.Module:
        import open_clip

        cfg = json.loads((Path(model_name.partition(":")[2]) / "open_clip_config.json").read_text())
        model = open_clip.create_model(model_name, pretrained=None, load_weights=False)
        open_clip.load_checkpoint(model, ckpt)
        if "preprocess_cfg" in cfg:
            merged = {**open_clip.get_model_preprocess_cfg(model), **cfg["preprocess_cfg"]}
            open_clip.model.set_model_preprocess_cfg(model, merged)
        return model

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def preprocessing(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "mean": list(map(float, self.pre_cfg["mean"])),
                "std": list(map(float, self.pre_cfg["std"])), "resize": "bicubic-antialias if size differs",
                "model": self.model_name, "pretrained": self.pretrained, "output": "image_projection (not normalised)"}

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        x = self._to_float(frames, self.input_size, "bicubic", antialias=True)
        return (x - self._mean) / self._std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device):
            return self.model.encode_image(x.to(self.device)).float().cpu()

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        """Prompts -> [P, dim] float32 L2-normalised text embeddings from the same CLIP model."""
        tokens = self.tokenizer(list(prompts)).to(self.device)
        with torch.inference_mode(), autocast(self.device):
            t = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(t, dim=-1).cpu().numpy().astype(np.float32)
