"""Stage 1 orchestration: decode -> detect/track + crop -> embed -> write, stages joined by bounded queues.

Threads, not processes: PyAV decoding, OpenCV and torch release the GIL. Decoder threads (several videos in
flight) put frames on the device once; a face thread detects, tracks and crops there (pipeline/stages.py);
the main thread fills full backbone batches across video boundaries and runs the audio backbones at each
video's end (pipeline/embed.py); the writer thread alone touches the cache's per-video bookkeeping.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from affcli.cache.errors import DoneElsewhere
from affcli.cache.fingerprint import make_fingerprint
from affcli.cache.store import FeatureStore
from affcli.common.device import resolve_device
from affcli.common.vocab import subject_video
from affcli.pipeline.backbones import build_backbone
from affcli.pipeline.errors import MediaError, NoAudioError
from affcli.pipeline.embed import Embedder
from affcli.pipeline.faces import FACE_MODES, FaceCropper, HaarDetector, MtcnnDetector
from affcli.pipeline.frames import frame_folder_index
from affcli.pipeline.media import probe_video
from affcli.pipeline.stages import DONE, Decoder, FaceStage, StageFailed, VideoError, nvdec_available, put
from affcli.pipeline.prompts import PROMPT_SETS
from affcli.pipeline.sources import Source, discover_sources

DEFAULT_PROMPT_SETS = ("expr8", "va9")
DONE_ELSEWHERE = "done-elsewhere"


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
    no_face: bool = False
    face: str = "mtcnn"
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
    def face_mode(self) -> str:
        """The face mode in force (`--no-face` is `--face none`)."""
        return "none" if self.no_face else self.face

    @property
    def aligned(self) -> bool:
        """Landmark alignment in force: on by default where landmarks exist (mtcnn)."""
        return self.face_mode == "mtcnn" if self.align is None else bool(self.align)

    def validate(self) -> None:
        """Refuse a run with no input folder, an unknown audio alignment or prompt set, before anything is built."""
        if self.images_dir is not None:
            from affcli.pipeline.images import check_image_config

            check_image_config(self)
        elif self.video_dir is None and self.frames_dir is None:
            raise ValueError("extract: give a video folder (--video-dir) or a frame folder (--frames-dir)")
        if self.audio_align not in ("centered", "causal"):
            raise ValueError(f"extract: audio alignment must be centered or causal, not {self.audio_align!r}")
        if self.face not in FACE_MODES:
            raise ValueError(f"extract: face detector must be one of {', '.join(FACE_MODES)}, not {self.face!r}")
        if self.align and self.face_mode != "mtcnn":
            raise ValueError(f"extract: --align needs face landmarks, which only --face mtcnn gives (not {self.face_mode})")
        if self.detect_every < 1 or not 0 <= self.track_iou <= 1:
            raise ValueError(f"extract: --detect-every must be >= 1 and the track IoU in [0, 1], "
                             f"not {self.detect_every} / {self.track_iou}")
        unknown = [n for n in self.prompt_sets if n not in PROMPT_SETS]
        if unknown:
            raise ValueError(f"extract: unknown prompt set(s) {', '.join(unknown)}; known: {', '.join(sorted(PROMPT_SETS))}")
        # an empty input folder or a filter naming unknown ids is refused before the store is created
        discover_sources(self.video_dir if self.frames_dir is None else None, self.frames_dir, self.videos,
                         self.images_dir)


@dataclass
class VideoResult:
    """Outcome of one video: ok / skipped / failed, with a one-line reason or warnings."""

    video_id: str
    status: str
    n_frames: int = 0
    message: str = ""
    specs: list[str] = field(default_factory=list)


def feature_fingerprint(backbone: Any, cfg: ExtractConfig, kind: str, crop_fp: dict[str, Any]) -> dict[str, Any]:
    """The backbone's own fingerprint plus the preprocessing and alignment choices of this run."""
    fp = backbone.fingerprint()
    pre = dict(fp.get("preprocessing", {}))
    if backbone.modality == "visual":
        pre.update(input=kind, crop=crop_fp)
        alignment = None
    else:
        pre["sample_rate"] = int(getattr(backbone, "sample_rate", 16000))
        alignment = cfg.audio_align
    return make_fingerprint(fp["spec"], fp["modality"], fp["dim"], fp["weights_sha256"], pre, alignment, fp["versions"])


def _resize_batch(crops: np.ndarray, size: int) -> np.ndarray:
    """Batched antialiased resize of uint8 [B,S,S,3] crops to another backbone's input size."""
    if crops.shape[1] == size:
        return crops
    t = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class Extractor:
    """Runs one extraction: sources x backbones -> cache, resumable, with per-video error isolation."""

    def __init__(self, cfg: ExtractConfig, progress: Callable[[str, dict], None] | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.progress = progress or (lambda event, info: None)
        self.store = FeatureStore(cfg.cache, mode="a")
        self.backbones = [build_backbone(s, self.device, seed=cfg.seed) for s in cfg.backbones]
        self.visual = [b for b in self.backbones if b.modality == "visual"]
        self.audio = [b for b in self.backbones if b.modality == "audio"]
        self.crop_size = max([b.input_size for b in self.visual], default=0)
        self.detector = self._detector() if self.visual and cfg.face_mode != "none" else None

    def _detector(self) -> HaarDetector | MtcnnDetector:
        c = self.cfg
        if c.face_mode == "haar":
            return HaarDetector(FaceCropper(size=self.crop_size, margin=c.face_margin, threads=c.face_threads))
        from affcli.pipeline.mtcnn import MTCNN

        return MtcnnDetector(MTCNN(self.device))

    # ---- planning ---------------------------------------------------------------------------
    def face_settings(self) -> dict[str, Any]:
        """How faces were found and cropped (stored with every face record, and in the crop fingerprint)."""
        c = self.cfg
        return {"detector": c.face_mode, "align": c.aligned, "template": "arcface-5pt" if c.aligned else None,
                "size": self.crop_size, "margin": None if c.aligned else c.face_margin,
                "detect_every": c.detect_every, "track_iou": c.track_iou if c.detect_every > 1 else None}

    def _crop_fingerprint(self, kind: str) -> dict[str, Any]:
        if kind == "frames":
            return {"mode": "pre-cropped", "fps": self.cfg.frames_fps, "size": self.crop_size}
        if self.detector is None:
            return {"mode": "whole-frame", "size": self.crop_size}
        return {"mode": "face", **self.detector.fingerprint(), **self.face_settings(),
                "crop": "similarity warp to the template" if self.cfg.aligned else "square box crop, zero padded"}

    def plan(self) -> tuple[list[Source], dict[str, list[str]], list[VideoResult]]:
        """Sources, the specs still to compute per video, and the videos skipped as complete."""
        c = self.cfg
        sources = discover_sources(c.video_dir if c.frames_dir is None else None, c.frames_dir, c.videos)
        kinds = {s.kind for s in sources}
        for b in self.backbones:
            for kind in kinds:
                self.store.ensure_feature_set(b.spec, feature_fingerprint(b, c, kind, self._crop_fingerprint(kind)))
        todo, skipped = {}, []
        for s in sources:
            need = [b.spec for b in self.backbones if not self.store.has_video(b.spec, s.video_id)]
            if need:
                todo[s.video_id] = need
            else:
                skipped.append(VideoResult(s.video_id, "skipped", message="already complete"))
        return [s for s in sources if s.video_id in todo], todo, skipped

    # ---- producer ---------------------------------------------------------------------------
    def _audio_path(self, src: Source) -> Path | None:
        if src.kind == "video":
            return src.path
        if self.cfg.video_dir is None:
            return None
        for cand in (src.video_id, subject_video(src.video_id)):
            for p in sorted(Path(self.cfg.video_dir).glob(cand + ".*")):
                return p
        return None

    # ---- run --------------------------------------------------------------------------------
    def run(self) -> list[VideoResult]:
        """Extract every pending video; never raises for one bad input, returns per-video results."""
        sources, todo, results = self.plan()
        by_id = {s.video_id: s for s in sources}
        self.progress("start", {"videos": len(sources), "skipped": len(results),
                                "frames": self._estimate_frames(sources)})
        if sources:
            results += self._run(sources, todo, by_id)
        self._encode_prompts()
        self.store.write_manifest()
        order = {s: i for i, s in enumerate(sorted(r.video_id for r in results))}
        return sorted(results, key=lambda r: order[r.video_id])

    def _estimate_frames(self, sources: list[Source]) -> int:
        total = 0
        for s in sources:
            try:
                if s.kind == "video":
                    m = probe_video(s.path)
                    total += m.n_frames or int((m.duration or 0) * m.fps)
                else:
                    total += frame_folder_index(s.path)[0]
            except (MediaError, OSError):
                pass
        return total

    def _run(self, sources: list[Source], todo: dict[str, list[str]], by_id: dict[str, Source]) -> list[VideoResult]:
        c = self.cfg
        stop = threading.Event()
        frames_q: queue.Queue = queue.Queue(maxsize=max(4, 2 * c.decode_workers))
        crops_q: queue.Queue = queue.Queue(maxsize=8)
        write_q: queue.Queue = queue.Queue(maxsize=4)
        results: list[VideoResult] = []
        faces = FaceStage(c.face_mode if self.visual else "none", self.crop_size or 1, self.detector, c.detect_every,
                          c.aligned, c.face_margin, c.track_iou)
        for s in sources:
            faces.start(s.video_id, s.kind)
        decoder = Decoder(self.device, c.decode_batch, self.crop_size, c.frames_fps, self._audio_path,
                          nvdec=nvdec_available(self.device))
        audio_specs = {b.spec for b in self.audio}
        face_attrs = self.face_settings() if c.face_mode != "none" and self.visual else None
        embedder = Embedder(self.visual, self.audio, c.batch_size, c.audio_align, todo, by_id,
                            face_attrs, self.progress)
        self.stages = {"faces": faces, "embed": embedder}
        threads = [threading.Thread(target=self._writer, args=(write_q, results, by_id, todo), daemon=True),
                   threading.Thread(target=_decode_all, args=(decoder, sources, todo, audio_specs, frames_q, stop,
                                                              c.decode_workers), daemon=True),
                   threading.Thread(target=_pump, args=(faces, frames_q, crops_q, stop), daemon=True)]
        for t in threads:
            t.start()
        try:
            while True:
                msg = crops_q.get()
                if msg is DONE:
                    break
                if isinstance(msg, StageFailed):
                    raise msg.error
                for out in embedder.feed(msg):
                    put(write_q, out, stop)
                if crops_q.empty() and embedder.waiting():
                    for out in embedder.flush():
                        put(write_q, out, stop)
            for out in embedder.flush():
                put(write_q, out, stop)
        except BaseException:
            stop.set()
            raise
        finally:
            write_q.put(DONE)
            threads[0].join()
        return results

    def _writer(self, write_q: queue.Queue, results: list[VideoResult], by_id: dict[str, Source],
                todo: dict[str, list[str]]) -> None:
        """The only thread that writes videos and failures into the store during a run."""
        visual = {b.spec for b in self.visual}
        while (msg := write_q.get()) is not DONE:
            vid = msg.video_id
            if isinstance(msg, VideoError):
                res = VideoResult(vid, "failed", 0, msg.message)
                for spec in todo[vid]:
                    self.store.record_failure(spec, vid, msg.message)
            else:
                for note in msg.notes:
                    warnings.warn(note, stacklevel=1)
                try:
                    elsewhere = []
                    for spec, (f, v) in msg.feats.items():
                        try:
                            self.store.write_video(spec, vid, f, v, msg.ts, msg.fps, str(by_id[vid].path),
                                                   faces=msg.faces if spec in visual else None)
                        except DoneElsewhere:  # first writer wins: another run completed it meanwhile
                            elsewhere.append(spec)
                    res = (VideoResult(vid, DONE_ELSEWHERE, len(msg.ts), "done by another run", elsewhere)
                           if msg.feats and len(elsewhere) == len(msg.feats) else
                           VideoResult(vid, "ok", len(msg.ts), "; ".join(msg.notes), list(msg.feats)))
                except Exception as e:  # noqa: BLE001 - a failed write fails this video only
                    res = VideoResult(vid, "failed", len(msg.ts), f"{by_id[vid].path}: cache write failed: {e}")
                    for spec in msg.feats:
                        self.store.record_failure(spec, vid, res.message)
            results.append(res)
            self.progress("video", {"video": vid, "status": res.status, "message": res.message})

    def _encode_prompts(self) -> None:
        have = set(self.store.text_sets())
        for b in self.visual:
            if not hasattr(b, "encode_text"):
                continue
            for name in self.cfg.prompt_sets:
                if (name, b.spec) not in have:
                    prompts = PROMPT_SETS[name]
                    self.store.write_text_embeddings(name, b.spec, prompts, b.encode_text(prompts))


def _decode_all(decoder: Decoder, sources: list[Source], todo: dict[str, list[str]], audio_specs: set[str],
                out: queue.Queue, stop: threading.Event, workers: int) -> None:
    """Decode stage: `workers` threads, each taking the next video; DONE once all are decoded."""
    jobs: queue.Queue = queue.Queue()
    for s in sources:
        jobs.put(s)

    def work() -> None:
        while not stop.is_set():
            try:
                s = jobs.get_nowait()
            except queue.Empty:
                return
            decoder.run(s, bool(audio_specs & set(todo[s.video_id])), out, stop)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    put(out, DONE, stop)


def _pump(stage: Callable[[Any], list[Any]], inq: queue.Queue, outq: queue.Queue, stop: threading.Event) -> None:
    """Run a stage over its input queue until DONE; a crash stops the run with StageFailed."""
    try:
        while (msg := inq.get()) is not DONE:
            for out in stage(msg):
                if not put(outq, out, stop):
                    return
        put(outq, DONE, stop)
    except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
        put(outq, StageFailed(e), stop)


def run_extract(cfg: ExtractConfig, progress: Callable[[str, dict], None] | None = None) -> list[VideoResult]:
    """Extract features of all videos of `cfg` into its cache; returns one result per video."""
    t0 = time.perf_counter()
    cfg.validate()
    if cfg.images_dir is not None:
        from affcli.pipeline.images import run_image_extract

        return run_image_extract(cfg, progress)
    ex = Extractor(cfg, progress)
    res = ex.run()
    ex.elapsed = time.perf_counter() - t0
    return res


def read_prompt_file(path: Path) -> list[str]:
    """Prompts of a text file, one per non-blank line; an empty file is a ValueError."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: no prompts in file")
    return lines


def encode_prompt_sets(cache: Path, spec: str, names: list[str], device: str = "auto",
                       custom: dict[str, list[str]] | None = None, prompt_file: Path | None = None,
                       file_set: str = "custom") -> list[tuple[str, int]]:
    """Encode named (or custom) prompt lists, and a prompt file as set `file_set`, with a CLIP backbone's
    text tower into the cache."""
    if prompt_file is not None:
        custom = {**(custom or {}), file_set: read_prompt_file(prompt_file)}
    b = build_backbone(spec, resolve_device(device))
    if not hasattr(b, "encode_text"):
        raise ValueError(f"{spec}: this backbone has no text encoder; prompts need a clip:* backbone")
    store = FeatureStore(cache, mode="a")
    lists = {n: PROMPT_SETS[n] if n in PROMPT_SETS else None for n in names}
    unknown = [n for n, v in lists.items() if v is None and not (custom and n in custom)]
    if unknown:
        raise ValueError(f"unknown prompt set(s) {', '.join(unknown)}; known: {', '.join(sorted(PROMPT_SETS))}")
    lists.update(custom or {})
    out = []
    for n, prompts in lists.items():
        store.write_text_embeddings(n, spec, prompts, b.encode_text(prompts))
        out.append((n, len(prompts)))
    return out
