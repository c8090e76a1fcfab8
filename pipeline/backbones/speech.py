"""Self-supervised speech transformers (Wav2Vec2, WavLM, HuBERT): a conv feature encoder at ~50 Hz and a transformer,
run once per long overlapping chunk and aligned to video frames; the hidden layer is chosen SUPERB-style.

`layer` picks what a step's feature is: `"last"` (the last hidden state), an index K of the L+1 hidden states (0 =
the transformer's input, L = the last layer, negative counts from the end), or `"mean"` (the mean of all L+1). The
choice is in the fingerprint's preprocessing and in the spec (`wavlm:microsoft/wavlm-large(layer=6)`), so two layers
of one model are two feature sets.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from affcli.common.device import autocast
from affcli.pipeline.backbones.base import AudioBackbone, BackboneError, CausalPlan, Steps
from affcli.pipeline.backbones.hub import tiny_or_pretrained
from affcli.pipeline.backbones.windows import run_causal, run_centered


def receptive_field(kernels: list[int], strides: list[int]) -> tuple[int, int]:
    """(receptive field, stride) in samples of a stack of 1-D convolutions."""
    rf, jump = 1, 1
    for k, s in zip(kernels, strides):
        rf += (k - 1) * jump
        jump *= s
    return rf, jump


def parse_layer(spec: str, layer: Any, n_layers: int) -> int | str:
    """`"last"`, `"mean"` or a hidden-state index in [0, n_layers] (negative counts from the end); else one line."""
    if isinstance(layer, str) and layer.strip().lower() in ("last", "mean"):
        return layer.strip().lower()
    try:
        k = int(layer)
        if isinstance(layer, float) and layer != k:
            raise ValueError
    except (TypeError, ValueError):
        raise BackboneError(spec, f"layer must be 'last', 'mean' or a hidden-state index 0..{n_layers}, "
                                  f"not {layer!r}") from None
    k = k + n_layers + 1 if k < 0 else k
    if not 0 <= k <= n_layers:
        raise BackboneError(spec, f"layer {layer} is outside the model's hidden states 0..{n_layers} "
                                  f"(0 = the transformer's input, {n_layers} = its last layer)")
    return k


def layer_output(layer: int | str, n_layers: int) -> str:
    """What the fingerprint records as the feature of a step."""
    if layer == "last":
        return "last_hidden_state"
    if layer == "mean":
        return f"mean of hidden_states[0..{n_layers}]"
    return f"hidden_states[{layer}] of 0..{n_layers}"


def pick_hidden(out: Any, layer: int | str) -> torch.Tensor:
    """The chosen layer of a transformers model output (run with output_hidden_states unless layer is 'last')."""
    if layer == "last":
        return out.last_hidden_state
    hs = out.hidden_states
    if layer == "mean":
        return torch.stack([h.float() for h in hs]).mean(0)
    return hs[int(layer)]


class SpeechSSLBackbone(AudioBackbone):
    """Conv feature encoder + transformer over raw 16 kHz audio; one pass per 20 s chunk (2 s overlap), batched.

    A subclass names its transformers classes and its tiny config, and calls `_setup` from its own `__init__`."""

    library = "transformers"
    chunk_s: float = 20.0
    overlap_s: float = 2.0
    causal_context_s: float = 4.0
    causal_hop_s: float = 0.2
    batch_chunks: int = 8

    def _setup(self, spec: str, seed: int, layer: Any, model_cls, config_cls, fe_cls, tiny_config: str) -> None:
        model, processor = tiny_or_pretrained(spec, seed, model_cls, config_cls, fe_cls, tiny_config)
        self.model = self._freeze(model)
        self.do_normalize = bool(getattr(processor or fe_cls(), "do_normalize", True))
        self.dim = int(model.config.hidden_size)
        self.n_layers = int(model.config.num_hidden_layers)
        self.layer = parse_layer(spec, layer, self.n_layers)
        self.rf, self.hop = receptive_field(list(model.config.conv_kernel), list(model.config.conv_stride))

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def preprocessing(self) -> dict[str, Any]:
        pre = {"sample_rate": self.sample_rate, "do_normalize": self.do_normalize,
               "output": layer_output(self.layer, self.n_layers),
               "step_s": self.hop / self.sample_rate, "receptive_field_s": self.rf / self.sample_rate,
               "chunk_s": self.chunk_s, "overlap_s": self.overlap_s,
               "causal_context_s": self.causal_context_s, "causal_hop_s": self.causal_hop_s}
        if self.layer != "last":
            pre["layer"] = self.layer
        return pre

    def _local_centres(self, n_steps: int) -> np.ndarray:
        return np.arange(n_steps) * self.hop + self.rf / 2.0

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """float32 [B, L] windows -> [B, T, dim] features of the chosen layer (per-window normalised if configured)."""
        t = torch.from_numpy(x).to(self.device)
        if t.shape[1] < self.rf:
            t = torch.nn.functional.pad(t, (0, self.rf - t.shape[1]))
        if self.do_normalize:
            t = (t - t.mean(1, keepdim=True)) / torch.sqrt(t.var(1, unbiased=False, keepdim=True) + 1e-7)
        with torch.inference_mode(), autocast(self.device):
            out = self.model(t, output_hidden_states=self.layer != "last")
            return pick_hidden(out, self.layer).float().cpu().numpy()

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
