"""Stage 1 orchestration: decode -> detect/track + crop -> embed -> write, stages joined by bounded queues.

Threads, not processes: PyAV decoding, OpenCV and torch release the GIL. Decoder threads (several videos in
flight) put frames on the device once; a face thread detects, tracks and crops there (pipeline/stages.py);
the main thread fills full backbone batches across video boundaries and runs the audio backbones at each
video's end (pipeline/embed.py); the writer thread alone touches the cache's per-video bookkeeping.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from affcli.cache.errors import DoneElsewhere
from affcli.cache.store import FeatureStore
from affcli.common.device import resolve_device
from affcli.common.vocab import subject_video
from affcli.pipeline.backbones import build_backbone
from affcli.pipeline.config import ExtractConfig, VideoResult, feature_fingerprint, refused_results
from affcli.pipeline.crop_settings import CropSettings
from affcli.pipeline.embed import Embedder
from affcli.pipeline.errors import Interrupted, MediaError
from affcli.pipeline.frames import frame_folder_index
from affcli.pipeline.images import run_image_extract
from affcli.pipeline.media import probe_video
from affcli.pipeline.prompt_encode import encode_prompts, named_prompt_sets
from affcli.pipeline.sources import Refused, Source
from affcli.pipeline.stages import DONE, Decoder, FaceStage, StageFailed, VideoError, nvdec_available, put

__all__ = ["DONE_ELSEWHERE", "ExtractConfig", "Extractor", "VideoResult", "run_extract"]

DONE_ELSEWHERE = "done-elsewhere"


class Extractor:
    """Runs one extraction: sources x backbones -> cache, resumable, with per-video error isolation."""

    def __init__(self, cfg: ExtractConfig, progress: Callable[[str, dict], None] | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.progress = progress or (lambda event, info: None)
        self.backbones = [build_backbone(s, self.device, seed=cfg.seed) for s in cfg.backbones]
        self.visual = [b for b in self.backbones if b.modality == "visual"]
        self.audio = [b for b in self.backbones if b.modality == "audio"]
        self.crop_size = max([b.input_size for b in self.visual], default=0)
        # without visual backbones frames are still decoded (timestamps), letterboxed to one pixel
        self.crop = cfg.crop_settings(self.crop_size) if self.visual else CropSettings(cfg.input_kind, 1)
        self.detector = self.crop.build_detector(self.device, cfg.face_threads)
        self.store = FeatureStore(cfg.cache, mode="a")  # once the parts are built: a refused run leaves no store

    def plan(self) -> tuple[list[Source], dict[str, list[str]], list[VideoResult]]:
        """Sources, the specs still to compute per video, and the results known already: videos skipped as complete,
        inputs refused at discovery (a name that cannot be an id: failed, one line, nothing stored)."""
        c = self.cfg
        refused: list[Refused] = []
        sources = c.sources(refused)
        for b in self.backbones:
            self.store.ensure_feature_set(b.spec, feature_fingerprint(b, self.crop, c.audio_align))
        todo, skipped = {}, refused_results(refused, self.progress)
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
        written: list[VideoResult] = []
        try:
            if sources:
                self._run(sources, todo, by_id, written)
        except KeyboardInterrupt:
            self.store.write_manifest()  # the manifest lists what the writer completed; the rest is redone on resume
            done = {r.video_id for r in written}
            raise Interrupted("extract", sum(r.status == "ok" for r in written),
                              [s.video_id for s in sources if s.video_id not in done]) from None
        results += written
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

    def _run(self, sources: list[Source], todo: dict[str, list[str]], by_id: dict[str, Source],
             results: list[VideoResult]) -> None:
        """Run the stages over `sources`, appending each video's result to `results` as the writer finishes it. Every
        thread is joined before this returns or raises (Ctrl-C included): the writer first completes the videos it
        was handed, the other stages stop at their next batch."""
        c = self.cfg
        stop = threading.Event()
        frames_q: queue.Queue = queue.Queue(maxsize=c.frame_queue())
        crops_q: queue.Queue = queue.Queue(maxsize=8)
        write_q: queue.Queue = queue.Queue(maxsize=4)
        faces = FaceStage(self.crop, self.detector, max_bytes=c.batch_bytes())
        decoder = Decoder(self.device, c.decode_batch, self.crop_size, c.frames_fps, self._audio_path,
                          nvdec=nvdec_available(self.device), max_bytes=c.batch_bytes())
        audio_specs = {b.spec for b in self.audio}
        embedder = Embedder(self.visual, self.audio, c.batch_size, c.audio_align, todo, by_id,
                            self.crop.face_attrs(), self.progress)
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
        except KeyboardInterrupt:
            stop.set()
            _wind_down(write_q, threads, stop, interrupted=True)
            raise
        except BaseException:
            stop.set()
            _wind_down(write_q, threads, stop, interrupted=False)
            raise
        _wind_down(write_q, threads, stop, interrupted=False)

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
        encode_prompts(self.store, self.visual, named_prompt_sets(self.cfg.prompt_sets))


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


def _wind_down(write_q: queue.Queue, threads: list[threading.Thread], stop: threading.Event,
               interrupted: bool) -> None:
    """Hand the writer its end mark and join every stage thread (none is left running into interpreter exit, which
    aborts the process). A Ctrl-C meanwhile stops the other stages while the writer completes the video it is
    writing, then raises KeyboardInterrupt; a second one (`interrupted`: the run is stopping for a Ctrl-C already)
    exits at once with 130: a video being written then stays incomplete, as after kill -9, and is redone on resume."""
    sent, caught = False, False
    while True:
        try:
            if not sent:
                write_q.put(DONE)
                sent = True
            for t in threads:
                t.join()
            break
        except KeyboardInterrupt:
            if interrupted:
                sys.stderr.write("interrupted again: exiting now; a video being written stays incomplete and is "
                                 "redone on resume\n")
                sys.stderr.flush()
                os._exit(130)
            stop.set()
            interrupted = caught = True
    if caught:
        raise KeyboardInterrupt


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    """The next item of `q`, or DONE once the run is stopping (a stage never waits on a producer that stopped)."""
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return DONE


def _pump(stage: Callable[[Any], list[Any]], inq: queue.Queue, outq: queue.Queue, stop: threading.Event) -> None:
    """Run a stage over its input queue until DONE; a crash stops the run with StageFailed."""
    try:
        while (msg := _get(inq, stop)) is not DONE:
            for out in stage(msg):
                if not put(outq, out, stop):
                    return
        put(outq, DONE, stop)
    except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
        put(outq, StageFailed(e), stop)


def run_extract(cfg: ExtractConfig, progress: Callable[[str, dict], None] | None = None) -> list[VideoResult]:
    """Extract features of all videos (or image folders) of `cfg` into its cache; returns one result per video."""
    cfg.validate()
    if cfg.images_dir is not None:
        return run_image_extract(cfg, progress)
    return Extractor(cfg, progress).run()
