"""Audio Spectrogram Transformer: time-resolved patch tokens (~10 steps/s) from one pass per 10.24 s segment.

Spec forms after `ast:`: a hub name (`MIT/ast-finetuned-audioset-10-10-0.4593`), a local
`save_pretrained` folder, or `tiny` (random weights from `configs/ast-tiny.json`). Patch tokens are laid
out [frequency, time]; the mean over frequency patches gives one step per time patch.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from affcli.common.device import autocast
from affcli.pipeline.backbones.base import AudioBackbone, CausalPlan, Steps
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.hub import tiny_or_pretrained
from affcli.pipeline.backbones.windows import run_causal, run_centered
FBANK_WIN, FBANK_HOP = 400, 160


@BACKBONES.register("ast", modality="audio", example="ast:MIT/ast-finetuned-audioset-10-10-0.4593",
                    help="AST time-resolved patch tokens: hub name, local folder, tiny")
class ASTBackbone(AudioBackbone):
    """ASTModel last hidden state, patch tokens averaged over frequency; 2 s overlap between segments."""

    library = "transformers"
    overlap_s: float = 2.0
    causal_hop_s: float = 0.5
    batch_segments: int = 4

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(spec, device, seed)
        from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
            model, fe = tiny_or_pretrained(spec, seed, ASTModel, ASTConfig, ASTFeatureExtractor, "ast-tiny.json")
            c = model.config
            self.fe = fe or ASTFeatureExtractor(num_mel_bins=c.num_mel_bins, max_length=c.max_length)
        if self.fe.num_mel_bins != c.num_mel_bins or self.fe.max_length != c.max_length:
            raise ValueError(f"{spec}: feature extractor ({self.fe.num_mel_bins} mels, {self.fe.max_length} frames) "
                             f"does not match the model ({c.num_mel_bins}, {c.max_length})")
        self.model = self._freeze(model)
        self.dim = int(c.hidden_size)
        self.n_freq = (c.num_mel_bins - c.patch_size) // c.frequency_stride + 1
        self.n_time = (c.max_length - c.patch_size) // c.time_stride + 1
        self.segment = (c.max_length - 1) * FBANK_HOP + FBANK_WIN
        self.step = c.time_stride * FBANK_HOP
        self.patch_span = (c.patch_size - 1) * FBANK_HOP + FBANK_WIN

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def preprocessing(self) -> dict[str, Any]:
        fe = self.fe
        return {"sample_rate": self.sample_rate, "fbank": {"num_mel_bins": fe.num_mel_bins, "max_length": fe.max_length,
                "mean": float(fe.mean), "std": float(fe.std), "do_normalize": bool(fe.do_normalize)},
                "output": "patch tokens, mean over frequency", "step_s": self.step / self.sample_rate,
                "segment_s": self.segment / self.sample_rate, "overlap_s": self.overlap_s,
                "causal_hop_s": self.causal_hop_s}

    def _local_centres(self, n_steps: int) -> np.ndarray:
        return np.arange(n_steps) * self.step + self.patch_span / 2.0

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """float32 [B, L] segments -> [B, n_time, dim]: fbank (padded to max_length), AST, mean over frequency."""
        if x.shape[1] < self.patch_span:
            x = np.pad(x, ((0, 0), (0, self.patch_span - x.shape[1])))
        fb = self.fe(list(x), sampling_rate=self.sample_rate, return_tensors="pt")["input_values"].to(self.device)
        with torch.inference_mode(), autocast(self.device):
            h = self.model(fb).last_hidden_state[:, 2:]
        return h.float().reshape(len(x), self.n_freq, self.n_time, self.dim).mean(1).cpu().numpy()

    def causal_plan(self) -> CausalPlan:
        return CausalPlan(self.segment, int(self.causal_hop_s * self.sample_rate), self._forward, self._local_centres)

    def steps(self, wav: np.ndarray, causal: bool) -> Steps:
        sr = self.sample_rate
        if causal:
            return run_causal(wav, sr, self.causal_plan())
        return run_centered(wav, sr, self.segment, int(self.overlap_s * sr), self.batch_segments,
                            self._forward, self._local_centres)
