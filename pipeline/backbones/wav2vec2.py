"""Wav2Vec2 last hidden states (~50 Hz) over long overlapping chunks, aligned to video frames.

Spec forms after `wav2vec2:`: a hub name (`facebook/wav2vec2-base`), a local `save_pretrained` folder,
or `tiny` (random weights from `configs/wav2vec2-tiny.json`, the default 7-layer conv stack: 50 Hz).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affcli.common.device import autocast
from affcli.pipeline.backbones.base import (AudioBackbone, BackboneError, CausalPlan, Steps, hub_offline,
                                            looks_local, seeded_build)
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.windows import run_causal, run_centered

CONFIG_DIR = Path(__file__).parent / "configs"


def load_pretrained(spec: str, name: str, model_cls, processor_cls):
    """`from_pretrained` for a hub name or local folder, offline-aware; failures become one BackboneError line."""
    local = looks_local(name)
    if local and not Path(name).expanduser().is_dir():
        raise BackboneError(spec, f"local model folder not found: {name}")
    path = str(Path(name).expanduser()) if local else name
    only_local = local or hub_offline()
    try:
        model = model_cls.from_pretrained(path, local_files_only=only_local)
    except Exception as e:  # noqa: BLE001 - every load failure becomes one line naming the spec
        hint = " (hub access is disabled: HF_HUB_OFFLINE)" if hub_offline() and not local else ""
        raise BackboneError(spec, f"cannot load {model_cls.__name__}: {type(e).__name__}: {e}{hint}") from e
    try:
        processor = processor_cls.from_pretrained(path, local_files_only=only_local)
    except Exception:  # noqa: BLE001 - folders saved without a preprocessor config use the defaults
        processor = None
    return model, processor


def receptive_field(kernels: list[int], strides: list[int]) -> tuple[int, int]:
    """(receptive field, stride) in samples of a stack of 1-D convolutions."""
    rf, jump = 1, 1
    for k, s in zip(kernels, strides):
        rf += (k - 1) * jump
        jump *= s
    return rf, jump


@BACKBONES.register("wav2vec2", modality="audio", example="wav2vec2:facebook/wav2vec2-base",
                    help="Wav2Vec2 last hidden state: hub name, local folder, tiny")
class Wav2Vec2Backbone(AudioBackbone):
    """Wav2Vec2Model last hidden state at ~50 Hz; one pass per 20 s chunk (2 s overlap), batched."""

    library = "transformers"
    chunk_s: float = 20.0
    overlap_s: float = 2.0
    causal_context_s: float = 4.0
    causal_hop_s: float = 0.2
    batch_chunks: int = 8

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(spec, device, seed)
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

        name = spec.partition(":")[2]
        if name == "tiny":
            cfg = Wav2Vec2Config(**json.loads((CONFIG_DIR / "wav2vec2-tiny.json").read_text()))
            model, processor = seeded_build(seed, lambda: Wav2Vec2Model(cfg)), None
        else:
            model, processor = load_pretrained(spec, name, Wav2Vec2Model, Wav2Vec2FeatureExtractor)
        self.model = self._freeze(model)
        self.do_normalize = bool(getattr(processor or Wav2Vec2FeatureExtractor(), "do_normalize", True))
        self.dim = int(model.config.hidden_size)
        self.rf, self.hop = receptive_field(list(model.config.conv_kernel), list(model.config.conv_stride))

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def preprocessing(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "do_normalize": self.do_normalize, "output": "last_hidden_state",
                "step_s": self.hop / self.sample_rate, "receptive_field_s": self.rf / self.sample_rate,
                "chunk_s": self.chunk_s, "overlap_s": self.overlap_s,
                "causal_context_s": self.causal_context_s, "causal_hop_s": self.causal_hop_s}

    def _local_centres(self, n_steps: int) -> np.ndarray:
        return np.arange(n_steps) * self.hop + self.rf / 2.0

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """float32 [B, L] windows -> [B, T, dim] hidden states (per-window zero-mean unit-variance if configured)."""
        t = torch.from_numpy(x).to(self.device)
        if t.shape[1] < self.rf:
            t = torch.nn.functional.pad(t, (0, self.rf - t.shape[1]))
        if self.do_normalize:
            t = (t - t.mean(1, keepdim=True)) / torch.sqrt(t.var(1, unbiased=False, keepdim=True) + 1e-7)
        with torch.inference_mode(), autocast(self.device):
            return self.model(t).last_hidden_state.float().cpu().numpy()

    def causal_plan(self) -> CausalPlan:
        sr = self.sample_rate
        return CausalPlan(int(self.causal_context_s * sr), int(self.causal_hop_s * sr), self._forward,
                          self._local_centres)

    def steps(self, wav: np.ndarray, causal: bool) -> Steps:
        sr = self.sample_rate
        if causal:
            return run_causal(wav, sr, self.causal_plan())
        return run_centered(wav, sr, int(self.chunk_s * sr), int(self.overlap_s * sr), self.batch_chunks,
                            self._forward, self._local_centres)
