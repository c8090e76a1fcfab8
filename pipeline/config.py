"""What `extract` computes and what it reports: the run's config (checked before anything is built), the per-video
result, and the feature fingerprint of a backbone under this run's preprocessing."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from affcli.cache.fingerprint import make_fingerprint
from affcli.pipeline.crop_settings import CropSettings
from affcli.pipeline.prompts import PROMPT_SETS
from affcli.pipeline.sources import Source, discover_sources

DEFAULT_PROMPT_SETS = ("expr8", "va9")


@dataclass
class ExtractConfig:
    """Everything that decides what `extract` computes (the parts that change features enter fingerprints)."""

    cache: Path
    backbones: list[str]
    video_dir: Path | None = None
    frames_dir: Path | None = None
    videos: list[str] | str | Path | None = None
    device: str = "auto"
    batch_size: int = 256
    decode_batch: int = 64
    decode_workers: int = 2
    face: str = "mtcnn"
    face_options: dict[str, Any] = field(default_factory=dict)
    align: bool | None = None
    face_margin: float = 0.25
    detect_every: int = 1
    track_iou: float = 0.4
    face_threads: int = max(1, (os.cpu_count() or 2))
    audio_align: Literal["centered", "causal"] = "centered"
    frames_fps: float = 30.0
    prompt_sets: tuple[str, ...] = DEFAULT_PROMPT_SETS
    seed: int = 0
    images_dir: Path | None = None
    views: int = 0
    augment: bool = False
    image_faces: bool = False

    @property
    def input_kind(self) -> Literal["video", "frames", "images"]:
        """What the run reads: still images (--images-dir), pre-cropped frame folders (--frames-dir) or videos."""
        return "images" if self.images_dir is not None else "frames" if self.frames_dir is not None else "video"

    def crop_settings(self, size: int, augment: dict[str, Any] | None = None) -> CropSettings:
        """The crop of this run at crop side `size` (`--face` and its `--face-option`s; still images are whole
        unless --image-faces; `augment` is the views' fingerprint of still images)."""
        kind = self.input_kind
        whole = kind == "images" and not self.image_faces
        return CropSettings(kind, size, "none" if whole else self.face, {} if whole else dict(self.face_options),
                            align=None if whole else self.align, margin=self.face_margin,
                            detect_every=self.detect_every, track_iou=self.track_iou,
                            fps=self.frames_fps if kind == "frames" else None, augment=augment)

    def sources(self) -> list[Source]:
        """The sources this run reads (the same discovery for one process and for the workers of a cluster)."""
        if self.images_dir is not None:
            return discover_sources(images_dir=self.images_dir, videos=self.videos)
        return discover_sources(self.video_dir if self.frames_dir is None else None, self.frames_dir, self.videos)

    def validate(self) -> None:
        """Refuse a run with no input folder, an unknown face detector, audio alignment or prompt set, or face options
        the detector cannot follow, before anything is built."""
        if self.images_dir is not None:
            _check_images(self)
        elif self.video_dir is None and self.frames_dir is None:
            raise ValueError("extract: give a video folder (--video-dir) or a frame folder (--frames-dir)")
        if self.audio_align not in ("centered", "causal"):
            raise ValueError(f"extract: audio alignment must be centered or causal, not {self.audio_align!r}")
        CropSettings("video", 1, self.face, dict(self.face_options), align=self.align, margin=self.face_margin,
                     detect_every=self.detect_every, track_iou=self.track_iou)
        unknown = [n for n in self.prompt_sets if n not in PROMPT_SETS]
        if unknown:
            raise ValueError(f"extract: unknown prompt set(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(PROMPT_SETS))}")
        self.sources()  # an empty input folder or a filter naming unknown ids is refused before the store is created


def _check_images(cfg: ExtractConfig) -> None:
    """Refuse --images-dir mixed with video/frame folders, and --views without --augment (or the reverse)."""
    if cfg.video_dir is not None or cfg.frames_dir is not None:
        raise ValueError("extract: --images-dir takes no --video-dir or --frames-dir (still images have no audio)")
    if cfg.views < 0:
        raise ValueError(f"extract: --views must be >= 0, not {cfg.views}")
    if bool(cfg.views) != bool(cfg.augment):
        raise ValueError("extract: --views K and --augment go together (K augmented views per image)")


@dataclass
class VideoResult:
    """Outcome of one video: ok / skipped / failed, with a one-line reason or warnings."""

    video_id: str
    status: str
    n_frames: int = 0
    message: str = ""
    specs: list[str] = field(default_factory=list)


def feature_fingerprint(backbone: Any, crop: CropSettings, audio_align: str) -> dict[str, Any]:
    """The backbone's own fingerprint plus this run's preprocessing: the input kind and the crop for a visual
    backbone, the sample rate and `audio_align` for an audio one."""
    fp = backbone.fingerprint()
    pre = dict(fp.get("preprocessing", {}))
    if backbone.modality == "visual":
        pre.update(input=crop.input, crop=crop.fingerprint())
        alignment = None
    else:
        pre["sample_rate"] = int(getattr(backbone, "sample_rate", 16000))
        alignment = audio_align
    return make_fingerprint(fp["spec"], fp["modality"], fp["dim"], fp["weights_sha256"], pre, alignment, fp["versions"])
