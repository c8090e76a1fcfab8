"""One frame -> the features a run was trained on: its visual backbones and face stage rebuilt from the cache
fingerprints.

The backbones come from the backbone registry (`build_backbone`, weights checked against the fingerprint's hash);
the crops from `extract`'s own face stage (pipeline.stages.FaceStage with the settings and detector that
`CropSettings.read` rebuilds from the crop fingerprint), fed one frame at a time; the embedding is the embed
stage's `backbone.embed(backbone.preprocess(crops))`; and every feature is rounded to the cache's dtype. So a
streamed frame gets the features `extract` stored for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from affcli.heads.fusion import group_features

STREAM_VIDEO = "stream"


def face_stage(crop_fp: dict[str, Any], source_kind: str, device: torch.device):
    """extract's face stage for the crop a feature set's fingerprint records, for frames of `source_kind`
    (video, camera or frames); refuses crops that are not causal (boxes interpolated from later frames)."""
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
    if crop.method == "face" and crop.detect_every != 1:
        raise ValueError(f"stream: the cached features were cropped with --detect-every {crop.detect_every}, which "
                         f"interpolates face boxes from later frames; stream needs features extracted with "
                         f"--detect-every 1")
    return FaceStage(crop, crop.build_detector(device, threads=1))


@dataclass
class _Visual:
    spec: str
    backbone: Any
    stage: int
    dtype: np.dtype


class FrameFeaturizer:
    """RGB uint8 [H, W, 3] frame -> ({modality: features [D]}, {modality: valid}) for the given visual feature sets,
    concatenated per modality in the order the heads group them (heads.fusion.group_features)."""

    def __init__(self, specs: list[str], fingerprints: dict[str, dict[str, Any]], source_kind: str = "video",
                 device: str | torch.device = "cpu", seed: int = 0):
        from affcli.pipeline.backbones import build_backbone

        self.device = torch.device(device)
        modality = {s: fingerprints[s]["modality"] for s in specs}
        audio = [s for s in specs if modality[s] != "visual"]
        if audio:
            raise ValueError(f"stream: feature set(s) {', '.join(audio)} are {modality[audio[0]]}; "
                             f"stream supports visual-only heads for now")
        self.groups = group_features(specs, modality)
        crops: list[dict] = []
        self.stages: list[Any] = []
        self.visual: list[_Visual] = []
        for s in specs:
            fp = fingerprints[s]
            crop = fp.get("preprocessing", {}).get("crop", {})
            if crop not in crops:
                crops.append(crop)
                self.stages.append(face_stage(crop, source_kind, self.device))
            b = build_backbone(s, self.device, seed=seed)
            sha = b.fingerprint()["weights_sha256"]
            if sha != fp["weights_sha256"]:
                raise ValueError(f"stream: backbone {s} built with seed {seed} has other weights than the cached "
                                 f"features (sha256 {sha[:12]} vs {str(fp['weights_sha256'])[:12]}); give the "
                                 f"extraction's --seed or the same weights")
            self.visual.append(_Visual(s, b, crops.index(crop), np.dtype(fp.get("dtype", "float16"))))

    @property
    def crop_size(self) -> int:
        """The largest crop side (what a frame folder is resized to on reading, as extract does)."""
        return max(int(st.settings.size) for st in self.stages)

    @classmethod
    def from_cache(cls, cache: str, specs: list[str], source_kind: str = "video", device: str | torch.device = "cpu",
                   seed: int = 0) -> "FrameFeaturizer":
        """The featurizer of feature sets `specs` of a cache (their fingerprints say backbone, weights and crop)."""
        from affcli.cache.store import FeatureStore

        store = FeatureStore(cache, mode="r")
        missing = [s for s in specs if s not in store.feature_sets()]
        if missing:
            raise ValueError(f"stream: {cache}: no feature set {missing[0]!r}")
        return cls(specs, {s: store.fingerprint(s) for s in specs}, source_kind, device, seed)

    def _crop(self, stage: Any, frame: np.ndarray, ok: bool) -> tuple[torch.Tensor, bool]:
        from affcli.pipeline.stages import FrameBatch, to_device

        msg = FrameBatch(STREAM_VIDEO, to_device(np.ascontiguousarray(frame[None]), self.device), np.zeros(1),
                         np.array([ok]))
        out = [m for m in stage(msg) if isinstance(m, FrameBatch)]
        return out[0].crops, bool(out[0].valid[0])

    def __call__(self, frame: np.ndarray, ok: bool = True) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
        crops = [self._crop(st, frame, ok) for st in self.stages]
        per_spec, valid_spec = {}, {}
        for v in self.visual:
            x, valid = crops[v.stage]
            e = v.backbone.embed(v.backbone.preprocess(x)).float().numpy()[0]
            per_spec[v.spec] = e.astype(v.dtype).astype(np.float32) if valid else np.zeros_like(e)
            valid_spec[v.spec] = valid
        feats = {m: np.concatenate([per_spec[s] for s in ss]) for m, ss in self.groups.items()}
        valid = {m: all(valid_spec[s] for s in ss) for m, ss in self.groups.items()}
        return feats, valid
