"""Silero voice activity detection: per-frame speech probability (a 1-d audio feature set) from the model that ships
inside the `silero-vad` wheel, rebuilt in torch so the whole audio runs batched.

Spec: `vad:silero`. The wheel's TorchScript model (`silero_vad/data/silero_vad.jit`, the package's default) is
read for its tensors only; the package itself is never imported (importing it sets torch to one thread for the whole
process). The graph: 64 samples of context + 512-sample chunks (32 ms at 16 kHz) -> STFT conv -> 4 convs -> LSTM
over the chunks -> sigmoid. The convolutions run on every chunk at once; the LSTM carries its state through the
whole audio (as the package's own iterator does), so a chunk's probability depends only on audio up to its end:
`causal` needs no trailing windows. Matches the package's TorchScript model to 1e-5 (tests/test_new_kinds.py).
`train-head --audio-valid vad:silero` masks audio features where nobody speaks.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from affcli.pipeline.backbones.base import AudioBackbone, BackboneError, Steps
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.spec import spec_name

CHUNK, CONTEXT = 512, 64
JIT_MEMBER = ("data", "silero_vad.jit")
BLOCK = 4096
KEYS = {"stft.weight": "stft.forward_basis_buffer",
        **{f"conv{i + 1}.{p}": f"encoder.{i}.reparam_conv.{p}" for i in range(4) for p in ("weight", "bias")},
        "lstm.weight_ih_l0": "decoder.rnn.weight_ih", "lstm.weight_hh_l0": "decoder.rnn.weight_hh",
        "lstm.bias_ih_l0": "decoder.rnn.bias_ih", "lstm.bias_hh_l0": "decoder.rnn.bias_hh",
        "out.weight": "decoder.decoder.2.weight", "out.bias": "decoder.decoder.2.bias"}


def package_file(*parts: str) -> Path:
    """A file inside the installed silero_vad package, found without importing it."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad package is not installed (pip install silero-vad)")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the silero-vad package")
    return path


class SileroVAD(nn.Module):
    """Silero VAD v5/v6 (16 kHz): [B, L] waveform -> [B, ceil(L / 512)] speech probabilities, one per 32 ms chunk."""

    def __init__(self):
        super().__init__()
        self.stft = nn.Conv1d(1, 258, 256, stride=128, bias=False)
        self.conv1, self.conv2 = nn.Conv1d(129, 128, 3, padding=1), nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3, self.conv4 = nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.Conv1d(64, 128, 3, padding=1)
        self.lstm = nn.LSTM(128, 128, batch_first=True)
        self.out = nn.Conv1d(128, 1, 1)

    def encode(self, chunks: torch.Tensor) -> torch.Tensor:
        """[N, 576] context + chunk -> [N, 128] (all chunks at once)."""
        x = nn.functional.pad(chunks, (0, CONTEXT), mode="reflect").unsqueeze(1)
        x = self.stft(x)
        x = (x[:, :129] ** 2 + x[:, 129:] ** 2).sqrt()
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = torch.relu(conv(x))
        return x.squeeze(-1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        b, n = wav.shape
        k = -(-n // CHUNK)
        wav = nn.functional.pad(wav, (CONTEXT, k * CHUNK - n))
        chunks = wav.unfold(1, CHUNK + CONTEXT, CHUNK)  # [B, k, 576]
        state, probs = None, []
        for i in range(0, k, BLOCK):  # blocks bound memory on long audio; the LSTM state runs on across them
            part = chunks[:, i:i + BLOCK]
            h = self.encode(part.reshape(-1, CHUNK + CONTEXT)).reshape(b, part.shape[1], 128)
            h, state = self.lstm(h, state)
            probs.append(torch.sigmoid(self.out(torch.relu(h).transpose(1, 2)))[:, 0])
        return torch.cat(probs, 1)


def load_silero(path: Path) -> SileroVAD:
    """The rebuilt model with the tensors of the package's TorchScript file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice: only its tensors are read
        jit = torch.jit.load(str(path), map_location="cpu")
    src = jit._model.state_dict()
    model = SileroVAD()
    model.load_state_dict({k: src[v].float() for k, v in KEYS.items()})
    return model


@BACKBONES.register("vad", modality="audio", example="vad:silero", offline=True,
                    help="Silero VAD speech probability per frame (1-d), from the silero-vad wheel: silero")
class VadBackbone(AudioBackbone):
    """Speech probability per 32 ms chunk, aligned to video frames; 1 dimension."""

    library = "torch"
    variants = ("silero",)
    dim = 1

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(spec, device, seed)
        name = spec_name(spec)
        if name not in self.variants:
            raise BackboneError(spec, f"unknown VAD {name!r}; known: {', '.join(self.variants)}")
        try:
            self.path = package_file(*JIT_MEMBER)
            self.model = self._freeze(load_silero(self.path))
        except Exception as e:  # noqa: BLE001 - every load failure becomes one line naming the spec
            raise BackboneError(spec, f"cannot load the Silero VAD model: {type(e).__name__}: {e}") from e
        self.package_version = importlib.metadata.version("silero-vad")

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "silero-vad": self.package_version}

    def preprocessing(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "chunk_s": CHUNK / self.sample_rate,
                "context_samples": CONTEXT, "output": "speech probability", "state": "LSTM over the whole audio",
                "source": {"package": f"silero-vad=={self.package_version}", "file": "/".join(JIT_MEMBER)}}

    def probabilities(self, wav: np.ndarray) -> np.ndarray:
        """float32 [ceil(L / 512)] speech probability per 32 ms chunk."""
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(wav, np.float32))[None].to(self.device))[0] \
                .float().cpu().numpy()

    def steps(self, wav: np.ndarray, causal: bool) -> Steps:
        p = self.probabilities(wav)
        ends = (np.arange(len(p)) + 1) * CHUNK / self.sample_rate
        return Steps(p[:, None].astype(np.float32), ends - CHUNK / 2 / self.sample_rate, ends)
