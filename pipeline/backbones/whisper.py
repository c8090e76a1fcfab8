"""Whisper encoder hidden states (50 Hz) over 30 s windows with overlap, aligned to video frames; no decoder weights.

Spec forms after `whisper:`: a hub name of any size (`openai/whisper-small`, `openai/whisper-large-v3`), a local
`save_pretrained` folder (of WhisperModel, WhisperForConditionalGeneration or the encoder alone), or `tiny` (random
weights from `configs/whisper-tiny.json`); option `layer` (`last`, `mean` or an index of the L+1 hidden states).

Only the encoder is built and only `encoder.*` / `model.encoder.*` tensors are read into it. Whisper always sees
30 s of log-mel input: windows of 30 s overlap by `overlap_s`, and the last one is shifted back to end exactly at
the audio's end, so silence padding only exists for audio shorter than one window (Whisper's own convention);
steps centred past the end of the audio are dropped and frames after it are invalid, so padding never becomes a
frame's feature.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from affcli.common.device import autocast
from affcli.pipeline.backbones.base import AudioBackbone, BackboneError, CausalPlan, Steps
from affcli.pipeline.backbones.hub import tiny_or_pretrained
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.speech import layer_output, parse_layer, pick_hidden
from affcli.pipeline.backbones.windows import run_causal, run_centered
ENCODER_KEYS = {r"^(model\.)?encoder\.": ""}


@functools.cache
def encoder_class():
    """WhisperEncoder that ignores a full checkpoint's decoder tensors quietly (they are never read into it)."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    class WhisperEncoderOnly(WhisperEncoder):
        _keys_to_ignore_on_load_unexpected = [r"^(model\.)?decoder\.", r"^proj_out\."]

    return WhisperEncoderOnly


@BACKBONES.register("whisper", modality="audio", example="whisper:openai/whisper-small",
                    help="Whisper encoder hidden states, 30 s windows: hub name, local folder, tiny; layer=last|mean|K")
class WhisperBackbone(AudioBackbone):
    """WhisperEncoder over 30 s log-mel windows (5 s overlap, batched); 1500 steps per window (20 ms)."""

    library = "transformers"
    overlap_s: float = 5.0
    causal_hop_s: float = 0.5
    batch_windows: int = 4

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0, layer: int | str = "last"):
        super().__init__(spec, device, seed)
        from transformers import WhisperConfig, WhisperFeatureExtractor

        model, fe = tiny_or_pretrained(spec, seed, encoder_class(), WhisperConfig, WhisperFeatureExtractor,
                                       "whisper-tiny.json", key_mapping=ENCODER_KEYS)
        c = model.config
        self.fe = fe or WhisperFeatureExtractor(feature_size=c.num_mel_bins)
        if self.fe.feature_size != c.num_mel_bins:
            raise BackboneError(spec, f"feature extractor has {self.fe.feature_size} mel bins, the model "
                                      f"{c.num_mel_bins}")
        self.model = self._freeze(model)
        self.dim = int(c.d_model)
        self.n_layers = int(c.encoder_layers)
        self.layer = parse_layer(spec, layer, self.n_layers)
        self.window = int(self.fe.n_samples)
        frames = 2 * int(c.max_source_positions)
        if frames != self.fe.nb_max_frames:
            raise BackboneError(spec, f"the encoder takes {frames} mel frames, its feature extractor makes "
                                      f"{self.fe.nb_max_frames}")
        self.hop = 2 * int(self.fe.hop_length)

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def preprocessing(self) -> dict[str, Any]:
        fe = self.fe
        pre = {"sample_rate": self.sample_rate, "log_mel": {"n_mels": fe.feature_size, "n_fft": fe.n_fft,
               "hop_length": fe.hop_length}, "output": layer_output(self.layer, self.n_layers),
               "encoder_only": True, "step_s": self.hop / self.sample_rate, "window_s": self.window / self.sample_rate,
               "overlap_s": self.overlap_s, "causal_hop_s": self.causal_hop_s,
               "padding": "last window ends at the audio end; steps past it dropped"}
        if self.layer != "last":
            pre["layer"] = self.layer
        return pre

    def _local_centres(self, n_steps: int) -> np.ndarray:
        return np.arange(n_steps, dtype=np.float64) * self.hop

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """float32 [B, L <= 30 s] windows -> [B, 1500, dim]: log-mel (padded to 30 s), encoder, the chosen layer."""
        mel = self.fe(list(x), sampling_rate=self.sample_rate, return_tensors="pt")["input_features"]
        with torch.inference_mode(), autocast(self.device):
            out = self.model(mel.to(self.device), output_hidden_states=self.layer != "last")
            return pick_hidden(out, self.layer).float().cpu().numpy()

    def causal_plan(self) -> CausalPlan:
        return CausalPlan(self.window, int(self.causal_hop_s * self.sample_rate), self._forward, self._local_centres)

    def steps(self, wav: np.ndarray, causal: bool) -> Steps:
        sr = self.sample_rate
        if causal:
            return run_causal(wav, sr, self.causal_plan())
        return run_centered(wav, sr, self.window, int(self.overlap_s * sr), self.batch_windows, self._forward,
                            self._local_centres)
