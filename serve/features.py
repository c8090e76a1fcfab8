"""Frames (and the audio track) -> the features a run was trained on: its backbones, face stage and audio windows
rebuilt from the cache fingerprints.

The backbones come from the backbone registry (`build_backbone`, weights checked against the fingerprint's hash);
the crops from `extract`'s own face stage (pipeline.stages.FaceStage with the settings and detector that
`CropSettings.read` rebuilds from the crop fingerprint), fed one frame at a time: with `--detect-every k` its tracker
holds the frames up to the next key frame, as in extraction, so those frames come out together once it arrives. The
embedding is the embed stage's `embed_visual` (forwards of one fixed shape, the frame padded as extraction pads its
last batch); audio features are the causal windows of `--audio-align causal`, run live as the samples arrive
(pipeline.live_audio). Every feature is rounded to the cache's dtype. So a streamed frame gets the features
`extract` stored for it.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from affcli.heads.fusion import group_features

STREAM_VIDEO = "stream"


def face_stage(crop_fp: dict[str, Any], source_kind: str, device: torch.device):
    """extract's face stage for the crop a feature set's fingerprint records, for frames of `source_kind`
    (video, camera or frames)."""
    from affcli.common.registry import UnknownNameError
    from affcli.pipeline.crop_settings import CropSettings
    from affcli.pipeline.stages import FaceStage

    try:
        crop = CropSettings.read(crop_fp)
    except (ValueError, UnknownNameError) as e:
        raise ValueError(f"stream: the cached features' crop cannot be rebuilt: {e}") from None
    if crop.input == "images":
        raise ValueError("stream: the run's features were extracted from still images (--images-dir); stream takes "
                         "video, camera or frame-folder input")
    if crop.method == "pre-cropped" and source_kind != "frames":
        raise ValueError("stream: the run's features were extracted from pre-cropped face folders; "
                         "stream such folders with --frames DIR")
    return FaceStage(crop, crop.build_detector(device, threads=1))


@dataclass
class _Visual:
    spec: str
    backbone: Any
    stage: int
    dtype: np.dtype


@dataclass
class _Audio:
    spec: str
    backbone: Any
    dtype: np.dtype
    live: Any = None


@dataclass
class Features:
    """One frame's features, ready for the head: its index and time, {modality: [D]} and {modality: valid}."""

    index: int
    time_s: float
    feats: dict[str, np.ndarray]
    valid: dict[str, bool]


class FrameFeaturizer:
    """Frames in order -> `Features` of the given feature sets, concatenated per modality in the order the heads
    group them (heads.fusion.group_features). `push` takes a frame and returns the frames resolved so far (none while
    a tracker waits for its next key frame, several when it arrives); `finish` resolves the rest.

    `audio` makes a fresh chunk iterator of the live 16 kHz track (pipeline.media.iter_audio) for each audio feature
    set; None: no audio, so audio features are invalid, as extraction stores a video without an audio stream.
    """

    def __init__(self, specs: list[str], fingerprints: dict[str, dict[str, Any]], source_kind: str = "video",
                 device: str | torch.device = "cpu", seed: int = 0,
                 audio: Callable[[], Iterator[np.ndarray]] | None = None):
        from affcli.pipeline.backbones import build_backbone

        self.device = torch.device(device)
        modality = {s: fingerprints[s]["modality"] for s in specs}
        self.groups = group_features(specs, modality)
        crops: list[dict] = []
        self.stages: list[Any] = []
        self.visual: list[_Visual] = []
        self.audio: list[_Audio] = []
        for s in specs:
            fp = fingerprints[s]
            if modality[s] == "audio" and fp.get("alignment") != "causal":
                raise ValueError(f"stream: audio feature set {s} was extracted with --audio-align "
                                 f"{fp.get('alignment')}, which uses later audio; stream needs --audio-align causal")
            b = build_backbone(s, self.device, seed=seed)
            sha = b.fingerprint()["weights_sha256"]
            if sha != fp["weights_sha256"]:
                raise ValueError(f"stream: backbone {s} built with seed {seed} has other weights than the cached "
                                 f"features (sha256 {sha[:12]} vs {str(fp['weights_sha256'])[:12]}); give the "
                                 f"extraction's --seed or the same weights")
            dtype = np.dtype(fp.get("dtype", "float16"))
            if modality[s] == "audio":
                b.causal_plan()  # a backbone without live windows is refused here, in one line
                self.audio.append(_Audio(s, b, dtype))
                continue
            crop = fp.get("preprocessing", {}).get("crop", {})
            if crop not in crops:
                crops.append(crop)
                self.stages.append(face_stage(crop, source_kind, self.device))
            self.visual.append(_Visual(s, b, crops.index(crop), dtype))
        self.set_audio(audio)
        self._frames: deque[tuple[int, float, bool]] = deque()
        self._crops: list[deque[tuple[torch.Tensor, bool]]] = [deque() for _ in self.stages]
        self._n = 0

    def set_audio(self, audio: Callable[[], Iterator[np.ndarray]] | None) -> None:
        """(Re)start the audio features on a new track (None: no audio)."""
        from affcli.pipeline.live_audio import LiveCausalAudio, LiveWaveform

        for a in self.audio:
            a.live = LiveCausalAudio(a.backbone, None if audio is None else LiveWaveform(audio()))

    @property
    def crop_size(self) -> int:
        """The largest crop side (what a frame folder is resized to on reading, as extract does)."""
        return max((int(st.settings.size) for st in self.stages), default=0)

    @property
    def holds(self) -> int:
        """The most frames a tracker holds before they resolve (k - 1 with --detect-every k)."""
        return max((st.settings.detect_every - 1 for st in self.stages if st.settings.method == "face"), default=0)

    @classmethod
    def from_cache(cls, cache: str, specs: list[str], source_kind: str = "video", device: str | torch.device = "cpu",
                   seed: int = 0, audio: Callable[[], Iterator[np.ndarray]] | None = None) -> "FrameFeaturizer":
        """The featurizer of feature sets `specs` of a cache (their fingerprints say backbone, weights and crop)."""
        from affcli.cache.store import FeatureStore

        store = FeatureStore(cache, mode="r")
        missing = [s for s in specs if s not in store.feature_sets()]
        if missing:
            raise ValueError(f"stream: {cache}: no feature set {missing[0]!r}")
        return cls(specs, {s: store.fingerprint(s) for s in specs}, source_kind, device, seed, audio)

    def push(self, frame: np.ndarray, time_s: float = 0.0, ok: bool = True) -> list[Features]:
        """Take the next frame (RGB uint8 [H, W, 3]); return the frames whose features are now known, in order."""
        from affcli.pipeline.stages import FrameBatch, to_device

        self._frames.append((self._n, float(time_s), bool(ok)))
        self._n += 1
        if self.stages:
            x = to_device(np.ascontiguousarray(frame[None]), self.device)
            for st, got in zip(self.stages, self._crops):
                self._take(st(FrameBatch(STREAM_VIDEO, x, np.array([float(time_s)]), np.array([bool(ok)]))), got)
        return self._ready()

    def finish(self) -> list[Features]:
        """The end of the source: resolve the frames the trackers still hold."""
        from affcli.pipeline.stages import VideoEnd

        for st, got in zip(self.stages, self._crops):
            self._take(st(VideoEnd(STREAM_VIDEO, 0.0)), got)
        return self._ready()

    @staticmethod
    def _take(msgs: list[Any], got: deque) -> None:
        from affcli.pipeline.stages import FrameBatch

        for m in msgs:
            if isinstance(m, FrameBatch):
                got.extend(zip(m.crops, (bool(v) for v in m.valid)))

    def _ready(self) -> list[Features]:
        from affcli.pipeline.embed import embed_visual

        r = min([len(g) for g in self._crops], default=len(self._frames))
        if r == 0:
            return []
        frames = [self._frames.popleft() for _ in range(r)]
        rows = [[g.popleft() for _ in range(r)] for g in self._crops]
        per_spec: dict[str, list[np.ndarray]] = {}
        valid_spec: dict[str, list[bool]] = {}
        for v in self.visual:
            crops = torch.stack([c for c, _ in rows[v.stage]])
            ok = [good for _, good in rows[v.stage]]
            e = embed_visual(v.backbone, crops).astype(v.dtype).astype(np.float32)
            per_spec[v.spec] = [e[i] if ok[i] else np.zeros_like(e[i]) for i in range(r)]
            valid_spec[v.spec] = ok
        for a in self.audio:
            got = [a.live.at(t) for _, t, _ in frames]
            per_spec[a.spec] = [f.astype(a.dtype).astype(np.float32) if good else np.zeros_like(f) for f, good in got]
            valid_spec[a.spec] = [good for _, good in got]
        out = []
        for i, (index, t, _) in enumerate(frames):
            feats = {m: np.concatenate([per_spec[s][i] for s in ss]) for m, ss in self.groups.items()}
            valid = {m: all(valid_spec[s][i] for s in ss) for m, ss in self.groups.items()}
            out.append(Features(index, t, feats, valid))
        return out

    def __call__(self, frame: np.ndarray, ok: bool = True, time_s: float = 0.0) -> tuple[dict[str, np.ndarray],
                                                                                        dict[str, bool]]:
        """One frame's features when they resolve at once (no tracker holding frames): ({modality: [D]}, valid)."""
        ready = self.push(frame, time_s, ok)
        if len(ready) != 1:
            raise ValueError("stream: this frame's features wait for a later key frame (--detect-every); use push()")
        return ready[0].feats, ready[0].valid
