"""In-memory form of cached features for training: one contiguous tensor per feature set plus per-video offsets."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class FeatureTable:
    """Feature sets of a list of videos, concatenated along time.

    Video i occupies rows ``starts[i] : starts[i] + lengths[i]`` of every tensor. ``feats[spec]`` is
    ``[T, D_spec]`` (float16 on disk, kept as stored unless a dtype was asked for), ``valid[spec]`` is
    ``[T]`` bool (False where the frame had no face / no audio), ``timestamps`` is ``[T]`` float64 seconds.
    ``modality[spec]`` is the set's modality (visual, audio) from its fingerprint, which heads group by.
    """

    videos: list[str]
    starts: np.ndarray
    lengths: np.ndarray
    feats: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    timestamps: torch.Tensor
    fps: dict[str, float] = field(default_factory=dict)
    modality: dict[str, str] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        """Total rows over all videos."""
        return int(self.lengths.sum())

    def video_slice(self, video: str) -> slice:
        """Row range of one video."""
        i = self.videos.index(video)
        return slice(int(self.starts[i]), int(self.starts[i] + self.lengths[i]))

    def to(self, device: torch.device | str) -> "FeatureTable":
        """Move every tensor to `device` (once, before training)."""
        return FeatureTable(
            self.videos, self.starts, self.lengths,
            {k: v.to(device) for k, v in self.feats.items()},
            {k: v.to(device) for k, v in self.valid.items()},
            self.timestamps.to(device), dict(self.fps), dict(self.modality),
        )

    @staticmethod
    def from_arrays(per_video: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
                    timestamps: dict[str, np.ndarray] | None = None,
                    fps: dict[str, float] | None = None, modality: dict[str, str] | None = None) -> "FeatureTable":
        """Build from ``{video: {spec: (feats [N, D], valid [N])}}``; every spec must cover every video.
        `modality` gives each spec's modality ({spec: "visual" | "audio"}), as a fingerprint would."""
        videos = list(per_video)
        lengths = np.array([next(iter(per_video[v].values()))[0].shape[0] for v in videos], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        specs = list(next(iter(per_video.values())))
        feats, valid = {}, {}
        for s in specs:
            for v, n in zip(videos, lengths):
                if per_video[v][s][0].shape[0] != n:
                    raise ValueError(f"video {v}: feature set {s} has {per_video[v][s][0].shape[0]} frames, expected {n}")
            feats[s] = torch.from_numpy(np.concatenate([per_video[v][s][0] for v in videos]))
            valid[s] = torch.from_numpy(np.concatenate([per_video[v][s][1] for v in videos]).astype(bool))
        if timestamps is None:
            ts = np.concatenate([np.arange(n) / 30.0 for n in lengths])
        else:
            ts = np.concatenate([timestamps[v] for v in videos])
        return FeatureTable(videos, starts, lengths, feats, valid, torch.from_numpy(ts.astype(np.float64)), dict(fps or {}),
                            dict(modality or {}))
