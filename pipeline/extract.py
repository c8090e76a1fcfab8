"""Stage 1 orchestration: decode + crop ahead of the backbones, embed in large batches, write off the compute path.

Threads, not processes: PyAV decoding and OpenCV detection release the GIL, and the backbones run on
one device from the main thread. Decoder threads fill a bounded queue (so memory stays bounded on long
videos), the main thread batches frames into every visual backbone, then runs the audio backbones on
the video's audio track aligned to the decoded frame timestamps, and a writer thread commits each
video's arrays to the cache while the next video is being embedded.
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

from affcli.cache.fingerprint import make_fingerprint
from affcli.cache.store import FeatureStore
from affcli.common.device import resolve_device
from affcli.common.vocab import subject_video
from affcli.pipeline.backbones import build_backbone
from affcli.pipeline.errors import MediaError, NoAudioError
from affcli.pipeline.faces import FaceCropper, whole_frames
from affcli.pipeline.frames import frame_folder_index, iter_frame_folder
from affcli.pipeline.media import iter_video_frames, probe_video, read_audio
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
    no_face: bool = False
    face_margin: float = 0.25
    detect_every: int = 1
    face_threads: int = max(1, (os.cpu_count() or 2))
    audio_align: Literal["centered", "causal"] = "centered"
    frames_fps: float = 30.0
    prompt_sets: tuple[str, ...] = DEFAULT_PROMPT_SETS
    seed: int = 0

    def validate(self) -> None:
        """Refuse a run with no input folder, an unknown audio alignment or prompt set, before anything is built."""
        if self.video_dir is None and self.frames_dir is None:
            raise ValueError("extract: give a video folder (--video-dir) or a frame folder (--frames-dir)")
        if self.audio_align not in ("centered", "causal"):
            raise ValueError(f"extract: audio alignment must be centered or causal, not {self.audio_align!r}")
        unknown = [n for n in self.prompt_sets if n not in PROMPT_SETS]
        if unknown:
            raise ValueError(f"extract: unknown prompt set(s) {', '.join(unknown)}; known: {', '.join(sorted(PROMPT_SETS))}")


@dataclass
class VideoResult:
    """Outcome of one video: ok / skipped / failed, with a one-line reason or warnings."""

    video_id: str
    status: str
    n_frames: int = 0
    message: str = ""
    specs: list[str] = field(default_factory=list)


@dataclass
class _Acc:
    source: Source
    chunks: dict[str, list[np.ndarray]] = field(default_factory=dict)
    valid: list[np.ndarray] = field(default_factory=list)
    ts: list[np.ndarray] = field(default_factory=list)
    pending: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    pending_n: int = 0


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
        self.cropper = FaceCropper(size=self.crop_size, margin=cfg.face_margin,
                                                 detect_every=cfg.detect_every, threads=cfg.face_threads) if self.visual and not cfg.no_face else None

    # ---- planning ---------------------------------------------------------------------------
    def _crop_fingerprint(self, kind: str) -> dict[str, Any]:
        if kind == "frames":
            return {"mode": "pre-cropped", "fps": self.cfg.frames_fps}
        if self.cropper is None:
            return {"mode": "whole-frame", "size": self.crop_size}
        return {"mode": "face", **self.cropper.fingerprint()}

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

    def _decode(self, src: Source, out: queue.Queue, need_audio: bool) -> None:
        c = self.cfg
        try:
            if src.kind == "video":
                meta = probe_video(src.path)
                fps = meta.fps
                for frames, ts in iter_video_frames(src.path, batch_size=c.decode_batch):
                    if self.cropper is not None:
                        crops, valid, _ = self.cropper.crop_batch(frames)
                    elif self.visual:
                        crops, valid = whole_frames(frames, self.crop_size), np.ones(len(frames), bool)
                    else:
                        crops, valid = None, np.ones(len(frames), bool)
                    out.put(("frames", src.video_id, crops, valid, ts))
            else:
                fps = c.frames_fps
                frame_folder_index(src.path)
                for frames, ts, ok in iter_frame_folder(src.path, batch_size=c.decode_batch, fps=fps,
                                                        size=self.crop_size or None):
                    crops = _resize_batch(frames, self.crop_size) if self.visual else None
                    out.put(("frames", src.video_id, crops, ok, ts))
            wav, audio_err = None, None
            if need_audio:
                apath = self._audio_path(src)
                if apath is None:
                    audio_err = f"{src.path}: no video to take audio from; audio features marked invalid"
                else:
                    try:
                        wav = read_audio(apath, 16000)
                    except NoAudioError as e:
                        audio_err = f"{e}; audio features marked invalid"
            out.put(("end", src.video_id, fps, wav, audio_err))
        except (MediaError, OSError, ValueError) as e:
            msg = str(e) if str(src.path) in str(e) else f"{src.path}: {e}"
            out.put(("error", src.video_id, msg))
        except Exception as e:  # a decoder bug must not kill the whole run
            out.put(("error", src.video_id, f"{src.path}: {type(e).__name__}: {e}"))

    def _producer(self, sources: list[Source], todo: dict[str, list[str]], out: queue.Queue) -> None:
        audio_specs = {b.spec for b in self.audio}
        jobs: queue.Queue = queue.Queue()
        for s in sources:
            jobs.put(s)

        def work() -> None:
            while True:
                try:
                    s = jobs.get_nowait()
                except queue.Empty:
                    return
                self._decode(s, out, bool(audio_specs & set(todo[s.video_id])))

        threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, self.cfg.decode_workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out.put(("done",))

    # ---- consumer ---------------------------------------------------------------------------
    def _embed_visual(self, acc: _Acc, todo: list[str]) -> None:
        if not acc.pending:
            return
        crops = np.concatenate([p[0] for p in acc.pending])
        valid = np.concatenate([p[1] for p in acc.pending])
        acc.pending, acc.pending_n = [], 0
        for b in self.visual:
            if b.spec not in todo:
                continue
            e = b.embed(b.preprocess(_resize_batch(crops, b.input_size))).float().cpu().numpy()
            e[~valid] = 0.0
            acc.chunks.setdefault(b.spec, []).append(e)

    def _finish(self, acc: _Acc, todo: list[str], fps: float, wav: np.ndarray | None,
                audio_err: str | None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray, list[str]]:
        self._embed_visual(acc, todo)
        n = int(sum(len(v) for v in acc.valid))
        ts = np.concatenate(acc.ts) if acc.ts else np.zeros(0)
        vvalid = np.concatenate(acc.valid) if acc.valid else np.zeros(0, bool)
        notes = []
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for b in self.visual:
            if b.spec in todo:
                feats = np.concatenate(acc.chunks[b.spec]) if acc.chunks.get(b.spec) else np.zeros((0, b.dim), np.float32)
                out[b.spec] = (feats, vvalid)
        if self.visual and n and not vvalid.any():
            notes.append(f"{acc.source.path}: no face found in any of {n} frames; visual features marked invalid")
        for b in self.audio:
            if b.spec not in todo:
                continue
            if wav is None:
                out[b.spec] = (np.zeros((n, b.dim), np.float32), np.zeros(n, bool))
            else:
                feats, valid = b.embed_audio(wav, ts, self.cfg.audio_align)
                feats = np.asarray(feats, np.float32).copy()
                feats[~valid] = 0.0
                out[b.spec] = (feats, np.asarray(valid, bool))
        if audio_err and self.audio:
            notes.append(audio_err)
        return out, ts, notes

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
        frames_q: queue.Queue = queue.Queue(maxsize=16)
        write_q: queue.Queue = queue.Queue(maxsize=4)
        results: list[VideoResult] = []
        lock = threading.Lock()

        def writer() -> None:
            while True:
                item = write_q.get()
                if item is None:
                    return
                vid, feats, ts, fps, notes = item
                try:
                    for spec, (f, v) in feats.items():
                        self.store.write_video(spec, vid, f, v, ts, fps, str(by_id[vid].path))
                    res = VideoResult(vid, "ok", len(ts), "; ".join(notes), list(feats))
                except Exception as e:
                    res = VideoResult(vid, "failed", len(ts), f"{by_id[vid].path}: cache write failed: {e}")
                    for spec in feats:
                        self.store.record_failure(spec, vid, res.message)
                with lock:
                    results.append(res)
                self.progress("video", {"video": vid, "status": res.status, "message": res.message})

        wt = threading.Thread(target=writer, daemon=True)
        wt.start()
        pt = threading.Thread(target=self._producer, args=(sources, todo, frames_q), daemon=True)
        pt.start()
        accs: dict[str, _Acc] = {}
        try:
            while True:
                msg = frames_q.get()
                kind = msg[0]
                if kind == "done":
                    break
                vid = msg[1]
                acc = accs.setdefault(vid, _Acc(by_id[vid]))
                if kind == "frames":
                    _, _, crops, valid, ts = msg
                    acc.valid.append(np.asarray(valid, bool))
                    acc.ts.append(np.asarray(ts, np.float64))
                    if crops is not None:
                        acc.pending.append((crops, np.asarray(valid, bool)))
                        acc.pending_n += len(crops)
                        if acc.pending_n >= self.cfg.batch_size:
                            self._embed_visual(acc, todo[vid])
                    self.progress("frames", {"n": len(ts)})
                elif kind == "end":
                    _, _, fps, wav, audio_err = msg
                    accs.pop(vid)
                    try:
                        if not acc.ts:
                            raise MediaError(acc.source.path, "no frames decoded")
                        feats, ts, notes = self._finish(acc, todo[vid], fps, wav, audio_err)
                        for note in notes:
                            warnings.warn(note, stacklevel=1)
                        write_q.put((vid, feats, ts, fps, notes))
                    except Exception as e:
                        self._fail(vid, todo[vid], str(e) if str(acc.source.path) in str(e)
                                   else f"{acc.source.path}: {type(e).__name__}: {e}", results, lock)
                elif kind == "error":
                    accs.pop(vid, None)
                    self._fail(vid, todo[vid], msg[2], results, lock)
        finally:
            write_q.put(None)
            wt.join()
        return results

    def _fail(self, vid: str, specs: list[str], message: str, results: list[VideoResult], lock: threading.Lock) -> None:
        for spec in specs:
            self.store.record_failure(spec, vid, message)
        with lock:
            results.append(VideoResult(vid, "failed", 0, message))
        self.progress("video", {"video": vid, "status": "failed", "message": message})

    def _encode_prompts(self) -> None:
        have = set(self.store.text_sets())
        for b in self.visual:
            if not hasattr(b, "encode_text"):
                continue
            for name in self.cfg.prompt_sets:
                if (name, b.spec) not in have:
                    prompts = PROMPT_SETS[name]
                    self.store.write_text_embeddings(name, b.spec, prompts, b.encode_text(prompts))


def run_extract(cfg: ExtractConfig, progress: Callable[[str, dict], None] | None = None) -> list[VideoResult]:
    """Extract features of all videos of `cfg` into its cache; returns one result per video."""
    t0 = time.perf_counter()
    cfg.validate()
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
