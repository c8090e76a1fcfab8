"""What `extract` computes and what it reports: the run's config (checked before anything is built), the per-video
result, and the feature fingerprint of a backbone under this run's preprocessing."""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from affcli.common.cli_options import option
from affcli.common.cluster import ClusterOptions
from affcli.pipeline.sources import Refused, Source, discover_sources, shown

if TYPE_CHECKING:
    from affcli.pipeline.crop_settings import CropSettings

DEFAULT_PROMPT_SETS = ("expr8", "va9")


@dataclass
class ExtractConfig:
    """Everything that decides what `extract` computes (the parts that change features enter fingerprints)."""

    cache: str = option(help="Zarr store to write (created if absent; resumes if present): a folder or an fsspec "
                             "URL such as s3://bucket/prefix.")
    backbones: list[str] = option(["clip:ViT-B-16/openai"], flag="--backbone", short="-b", help="Backbone spec.")
    video_dir: Path | None = option(None, help="Folder of videos (mp4/avi/mkv/mov/webm).")
    frames_dir: Path | None = option(None, help="Aff-Wild2 cropped_aligned/<video>/00001.jpg folders (no face "
                                                "detection). With --video-dir too, audio comes from the video of the "
                                                "same id.")
    videos: str | None = option(None, help="Only these ids: comma list, or a file of ids (a list of ids in Python).")
    device: str = option("auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    batch_size: int = option(256, help="Frames embedded per step (full across video boundaries); each backbone runs "
                                       "them in forwards of one fixed shape (8 rows on the CPU, 64 on a GPU), so a "
                                       "frame's features never depend on its batch-mates.")
    decode_batch: int = option(64, help="Frames per decoded batch.")
    decode_workers: int = option(2, help="Decoder threads running ahead of the backbones.")
    decode_memory_mb: int = option(1024, help="MiB that decoded frames may take in flight (decode batches, queues, the "
                                              "face stage's float copies): batches shrink with the frame size, so "
                                              "any resolution extracts within it.")
    face: str = option("mtcnn", help="Face detector.")
    face_options: dict[str, Any] = option({}, flag="--face-option", help="An option of the --face detector (JSON "
                                          "values), e.g. min_face_size=40; recorded in the fingerprint.")
    align: bool | None = option(None, help="Warp faces onto the 5-point ArcFace template.",
                                shown="on where the detector gives landmarks")
    face_margin: float = option(0.25, help="Margin around the detected face box, as a fraction of its size.")
    detect_every: int = option(1, help="Run the face detector on every k-th frame (and around cuts); frames between "
                                       "follow the IoU-linked track, re-detected where it breaks.")
    track_iou: float = option(0.4, help="With --detect-every k > 1: the IoU that links a box to the track.")
    face_threads: int = option(max(1, (os.cpu_count() or 2)), help="Host threads of a host-side detector (haar).",
                               shown="the CPUs")
    audio_align: str = option("centered", help="centered | causal (a frame's audio "
                                                                         "feature uses no later samples).")
    frames_fps: float = option(30.0, help="Frame rate of --frames-dir input (for timestamps).")
    prompt_sets: tuple[str, ...] = option(DEFAULT_PROMPT_SETS, flag="--prompts",
                                          help="Prompt sets encoded with each CLIP backbone.")
    seed: int = option(0, help="Seed of tiny random-weight backbones (and of --augment views).")
    images_dir: Path | None = option(None, help="A folder tree of jpg/png still images (e.g. LSD's class folders): "
                                                "one video per folder, one row per image, paths kept; whole images "
                                                "unless --image-faces.")
    views: int = option(0, help="With --images-dir --augment: K augmented views per image, cached.")
    augment: bool = option(False, help="Random resized crop, flip and colour jitter (seeded) for the --views, before "
                                       "the frozen backbones.")
    image_faces: bool = option(False, help="Crop the faces of --images-dir images too, with the --face detector (as "
                                           "video frames are).")

    @property
    def input_kind(self) -> Literal["video", "frames", "images"]:
        """What the run reads: still images (--images-dir), pre-cropped frame folders (--frames-dir) or videos."""
        return "images" if self.images_dir is not None else "frames" if self.frames_dir is not None else "video"

    def crop_settings(self, size: int, augment: dict[str, Any] | None = None) -> CropSettings:
        """The crop of this run at crop side `size` (`--face` and its `--face-option`s; still images are whole
        unless --image-faces; `augment` is the views' fingerprint of still images)."""
        from affcli.pipeline.crop_settings import CropSettings

        kind = self.input_kind
        whole = kind == "images" and not self.image_faces
        return CropSettings(kind, size, "none" if whole else self.face, {} if whole else dict(self.face_options),
                            align=None if whole else self.align, margin=self.face_margin,
                            detect_every=self.detect_every, track_iou=self.track_iou,
                            fps=self.frames_fps if kind == "frames" else None, augment=augment)

    def sources(self, refused: list[Refused] | None = None) -> list[Source]:
        """The sources this run reads (the same discovery for one process and for the workers of a cluster); inputs
        whose name cannot be an id go to `refused` (see pipeline.sources.discover_sources)."""
        if self.images_dir is not None:
            return discover_sources(images_dir=self.images_dir, videos=self.videos, refused=refused)
        return discover_sources(self.video_dir if self.frames_dir is None else None, self.frames_dir, self.videos,
                                refused=refused)

    def frame_queue(self) -> int:
        """Decoded batches the queue between the decoders and the face stage holds."""
        return max(4, 2 * self.decode_workers)

    def batch_bytes(self) -> int:
        """The bytes one decoded batch may take: --decode-memory-mb shared by every batch that can be in flight (the
        queue, one being filled and one being handed on per decoder, one in the face stage and one its tracker
        holds); the face stage's float copies are cut to the same size."""
        slots = self.frame_queue() + 2 * self.decode_workers + 2
        return self.decode_memory_mb * 2**20 // slots

    def validate(self) -> None:
        """Refuse a run with no input folder, a backbone given twice, a count out of range, an unknown face detector,
        audio alignment or prompt set, or face options the detector cannot follow, before anything is built."""
        _check_counts(self)
        if self.images_dir is not None:
            _check_images(self)
        elif self.video_dir is None and self.frames_dir is None:
            raise ValueError("extract: give a video folder (--video-dir) or a frame folder (--frames-dir)")
        if self.audio_align not in ("centered", "causal"):
            raise ValueError(f"extract: audio alignment must be centered or causal, not {self.audio_align!r}")
        from affcli.pipeline.crop_settings import CropSettings
        from affcli.pipeline.prompts import PROMPT_SETS

        CropSettings("video", 1, self.face, dict(self.face_options), align=self.align, margin=self.face_margin,
                     detect_every=self.detect_every, track_iou=self.track_iou)
        unknown = [n for n in self.prompt_sets if n not in PROMPT_SETS]
        if unknown:
            raise ValueError(f"extract: unknown prompt set(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(PROMPT_SETS))}")
        self.sources([])  # an empty input folder or a filter naming unknown ids is refused before the store is created


MIN_DECODE_MB = 64


def _check_counts(cfg: ExtractConfig) -> None:
    """Refuse no backbone or one given twice (each would then fail every video), and sizes and counts out of range."""
    specs = [str(b) for b in cfg.backbones]
    if not specs:
        raise ValueError("extract: give at least one backbone (-b KIND:NAME)")
    twice = sorted({s for s in specs if specs.count(s) > 1})
    if twice:
        raise ValueError(f"extract: backbone {twice[0]} is given {specs.count(twice[0])} times (-b); give each "
                         f"backbone once")
    for name, lo in (("batch_size", 1), ("decode_batch", 1), ("decode_workers", 1), ("face_threads", 1),
                     ("decode_memory_mb", MIN_DECODE_MB)):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"extract: --{name.replace('_', '-')} must be an integer >= {lo}, not {v!r}")
    if not (isinstance(cfg.frames_fps, (int, float)) and math.isfinite(cfg.frames_fps) and cfg.frames_fps > 0):
        raise ValueError(f"extract: --frames-fps must be > 0, not {cfg.frames_fps!r}")


def _check_images(cfg: ExtractConfig) -> None:
    """Refuse --images-dir mixed with video/frame folders, and --views without --augment (or the reverse)."""
    if cfg.video_dir is not None or cfg.frames_dir is not None:
        raise ValueError("extract: --images-dir takes no --video-dir or --frames-dir (still images have no audio)")
    if cfg.views < 0:
        raise ValueError(f"extract: --views must be >= 0, not {cfg.views}")
    if bool(cfg.views) != bool(cfg.augment):
        raise ValueError("extract: --views K and --augment go together (K augmented views per image)")


@dataclass
class ExtractOptions:
    """`affcli extract`: the run's config and the engine it runs on (one process, or Dask workers)."""

    config: ExtractConfig = option(ExtractConfig, help="What to extract.")
    cluster: ClusterOptions = option(ClusterOptions, help="Dask engine.")


@dataclass
class VideoResult:
    """Outcome of one video: ok / skipped / failed, with a one-line reason or warnings."""

    video_id: str
    status: str
    n_frames: int = 0
    message: str = ""
    specs: list[str] = field(default_factory=list)


def refused_results(refused: list[Refused], progress: Callable[[str, dict], None] | None = None) -> list[VideoResult]:
    """One failed result per input refused at discovery (its id shown escaped), each also reported as a `refused`
    progress event, so a run's summary and exit code count it; nothing of it is stored."""
    out = []
    for r in refused:
        if progress is not None:
            progress("refused", {"video": shown(r.video_id), "message": r.message})
        out.append(VideoResult(shown(r.video_id), "failed", 0, r.message))
    return out


def feature_fingerprint(backbone: Any, crop: CropSettings, audio_align: str) -> dict[str, Any]:
    """The backbone's own fingerprint plus this run's preprocessing: the input kind and the crop for a visual
    backbone, the sample rate and `audio_align` for an audio one."""
    from affcli.cache.fingerprint import make_fingerprint

    fp = backbone.fingerprint()
    pre = dict(fp.get("preprocessing", {}))
    if backbone.modality == "visual":
        pre.update(input=crop.input, crop=crop.fingerprint())
        alignment = None
    else:
        pre["sample_rate"] = int(getattr(backbone, "sample_rate", 16000))
        alignment = audio_align
    return make_fingerprint(fp["spec"], fp["modality"], fp["dim"], fp["weights_sha256"], pre, alignment, fp["versions"])


@dataclass
class PromptsOptions:
    """`affcli prompts`: prompt lists encoded by a CLIP text tower into the cache."""

    cache: Path = option(help="Feature cache to store the text embeddings in.")
    backbone: str = option("clip:ViT-B-16/openai", short="-b", help="A backbone with a text tower (clip:*).")
    sets: list[str] | None = option(None, flag="--set", help="Named prompt sets (repeatable).", shown="expr8, va9")
    file: Path | None = option(None, help="A text file of prompts, one per line (custom set).")
    name: str = option("custom", help="Name of the custom set from --file.")
    device: str = option("auto", help="auto, cpu, cuda, cuda:1 ...")
    overwrite: bool = option(False, help="Replace a built-in or cached prompt set of the same name by other prompts "
                                         "(refused without it).")
