"""Backbone contract of stage 1: frozen models behind one small interface, each with a fingerprint for the cache."""
from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from affcli.cache.fingerprint import make_fingerprint


class BackboneError(RuntimeError):
    """A backbone that cannot be built or loaded; str() is one line naming the spec."""

    def __init__(self, spec: str, message: str):
        self.spec = spec
        self.message = " ".join(str(message).split())
        super().__init__(f"{spec}: {self.message}")

    def __str__(self) -> str:
        return self.args[0]


def hub_offline() -> bool:
    """True when the environment forbids hub access (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set)."""
    flags = (os.environ.get(k, "").lower() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f in ("1", "true", "yes", "on") for f in flags)


def looks_local(name: str) -> bool:
    """A name meant as a filesystem path rather than a hub id (absolute, relative, home, or existing)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or Path(name).expanduser().exists()


def state_dict_sha256(module: torch.nn.Module) -> str:
    """Deterministic hash of a module's parameters and buffers (names, dtypes, shapes and bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def seeded_build(seed: int, build):
    """Call `build()` under a forked, seeded torch RNG so random-weight models are reproducible and side-effect free."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class Backbone(ABC):
    """A frozen feature extractor named by a spec string; `fingerprint()` identifies its features in the cache.

    `modality` is declared once per kind by its base class (VisualBackbone, AudioBackbone) and written into
    every fingerprint, so the heads group feature sets without knowing backbone kinds.
    """

    spec: str
    modality: ClassVar[Literal["visual", "audio"]]
    dim: int
    library: ClassVar[str] = ""

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0):
        self.spec = spec
        self.device = torch.device(device)
        self.seed = seed
        self._sha: str | None = None

    @property
    @abstractmethod
    def module(self) -> torch.nn.Module:
        """The torch module whose weights define the features (hashed for the fingerprint)."""

    @abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """Everything besides the weights that changes the features (sizes, normalisation, windows)."""

    def _freeze(self, model: torch.nn.Module) -> torch.nn.Module:
        model.eval().requires_grad_(False)
        return model.to(self.device)

    def versions(self) -> dict[str, str]:
        """Library versions that produced the features."""
        out = {"torch": torch.__version__}
        if self.library:
            out[self.library] = __import__(self.library).__version__
        return out

    def weights_sha256(self) -> str:
        """Hash of what defines the features besides `preprocessing()`: the module's weights (a kind without weights,
        such as a signal-processing feature set, hashes its configuration instead)."""
        return state_dict_sha256(self.module)

    def fingerprint(self) -> dict[str, Any]:
        """Spec, modality, dim, weights hash (computed once), preprocessing, cache dtype and library versions."""
        if self._sha is None:
            self._sha = self.weights_sha256()
        return make_fingerprint(self.spec, self.modality, self.dim, self._sha, self.preprocessing(),
                                versions=self.versions())


class VisualBackbone(Backbone):
    """Face-crop embedder: uint8 RGB crops of `input_size` -> [B, dim] features."""

    modality = "visual"
    input_size: int

    @abstractmethod
    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [B,S,S,3] RGB array, or a [B,3,S,S] tensor (uint8 or float 0..255, any device) -> normalised
        float [B,C,S',S'] on self.device (one batched op)."""

    @abstractmethod
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch -> [B, dim] float32 on the CPU."""

    def _as_nchw(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Crops as [B,3,S,S] on self.device, dtype kept: a [B,3,S,S] tensor goes straight through (no host trip),
        a [B,S,S,3] array or tensor is moved and permuted."""
        if isinstance(frames, torch.Tensor) and frames.ndim == 4 and frames.shape[1] == 3:
            return frames.to(self.device, non_blocking=True)
        x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"{self.spec}: expected frames [B,S,S,3] or a tensor [B,3,S,S], got shape {tuple(x.shape)}")
        return x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)

    def _to_float(self, frames: np.ndarray | torch.Tensor, size: int, mode: str, antialias: bool) -> torch.Tensor:
        """Crops (see `_as_nchw`) -> float [B,3,size,size] in [0,1] on the device, resized only when S != size."""
        x = self._as_nchw(frames).float().div_(255.0)
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode=mode, antialias=antialias,
                                                align_corners=False).clamp_(0, 1)
        return x


@dataclass
class Steps:
    """Time-resolved audio features: feats [T,D], step centres [T] (s), and when each step's receptive window ends [T] (s)."""

    feats: np.ndarray
    centre: np.ndarray
    end: np.ndarray


@dataclass(frozen=True)
class CausalPlan:
    """How `--audio-align causal` windows the waveform: trailing windows of `length` samples (zeros before 0) ending
    every `hop` samples and at the end of the audio, each run alone through `forward` (float32 [1, length] ->
    [1, T, dim]); a window's feature is its last step, centred `local_centres(T)[-1]` samples after its start. One
    window per forward, in extraction and in `stream` alike, so a window's feature never depends on its batch-mates."""

    length: int
    hop: int
    forward: Callable[[np.ndarray], np.ndarray]
    local_centres: Callable[[int], np.ndarray]


@runtime_checkable
class TextEncoder(Protocol):
    """A backbone with a text tower (CLIP): prompts -> [P, dim] L2-normalised float32 embeddings."""

    def encode_text(self, prompts: list[str]) -> np.ndarray: ...


class AudioBackbone(Backbone):
    """16 kHz mono waveform -> time-resolved steps -> features aligned to video frame timestamps."""

    modality = "audio"
    sample_rate: int = 16000

    @abstractmethod
    def steps(self, wav: np.ndarray, causal: bool) -> Steps:
        """Run the model over the waveform; causal=True computes steps only from audio up to their `end`."""

    def causal_plan(self) -> CausalPlan:
        """The causal windows of this backbone (what `stream` runs live, window by window)."""
        raise BackboneError(self.spec, "this audio backbone declares no causal window plan; it cannot be streamed")

    def embed_audio(self, wav: np.ndarray, frame_times: np.ndarray,
                    align: Literal["centered", "causal"]) -> tuple[np.ndarray, np.ndarray]:
        """(feats float32 [F, dim], valid bool [F]) at the video frames' timestamps, see pipeline.align."""
        from affcli.pipeline.align import align_steps

        wav = np.ascontiguousarray(np.asarray(wav, np.float32).reshape(-1))
        frame_times = np.asarray(frame_times, np.float64).reshape(-1)
        if align not in ("centered", "causal"):
            raise ValueError(f"{self.spec}: alignment must be 'centered' or 'causal', got {align!r}")
        duration = len(wav) / self.sample_rate
        if len(wav) == 0 or len(frame_times) == 0:
            return np.zeros((len(frame_times), self.dim), np.float32), np.zeros(len(frame_times), bool)
        st = self.steps(wav, causal=align == "causal")
        return align_steps(st.feats, st.centre, st.end, frame_times, align, duration)
