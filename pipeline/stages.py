"""Stages of `extract` and the typed messages between them: decode -> faces (detect/track + crop) -> embed -> write.

Each stage is a thread joined to the next by a bounded queue (memory stays bounded, a slow stage holds the
others back). Frames go to the device once, in the decoder (pinned host memory, non-blocking copy on CUDA),
and detection, crops, resize, normalisation and the backbones work on device tensors from there on.
"""
from __future__ import annotations

import itertools
import queue
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affcli.pipeline.crop_settings import CropSettings
from affcli.pipeline.crops import chunked, face_crops, letterbox, resize_frames
from affcli.pipeline.errors import MediaError, NoAudioError
from affcli.pipeline.frames import frame_folder_index, iter_frame_folder
from affcli.pipeline.media import frames_per_batch, iter_video_frames, probe_video, read_audio
from affcli.pipeline.sources import Source
from affcli.pipeline.tracking import FaceTrack, Tracker


@dataclass
class FrameBatch:
    """Consecutive frames of one video: frames [B,3,H,W] uint8 on the device, timestamps [B] s, ok [B] (decoded);
    after the face stage also crops [B,3,S,S] uint8, valid [B] and the face arrays (numpy: box, score, landmarks)."""

    video_id: str
    frames: torch.Tensor | None
    ts: np.ndarray
    ok: np.ndarray
    crops: torch.Tensor | None = None
    valid: np.ndarray | None = None
    faces: dict[str, np.ndarray] | None = None


@dataclass
class VideoEnd:
    """All frames of a video were sent; its fps, 16 kHz audio (or None) and why audio is missing."""

    video_id: str
    fps: float
    wav: np.ndarray | None = None
    audio_err: str | None = None


@dataclass
class VideoError:
    """A video failed; message is one line naming its file. Frames already sent for it are dropped."""

    video_id: str
    message: str


@dataclass
class VideoDone:
    """A video's arrays, ready for the writer: {spec: (feats [n,D], valid [n])}, timestamps, faces, warnings."""

    video_id: str
    feats: dict[str, tuple[np.ndarray, np.ndarray]]
    ts: np.ndarray
    fps: float
    faces: Any = None
    notes: list[str] = field(default_factory=list)


@dataclass
class StageFailed:
    """A stage crashed on something that is not one video's fault; the run stops and raises it."""

    error: BaseException


DONE = None  # end of stream


def put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put into a bounded queue unless the run is stopping (no thread blocks forever on a dead consumer)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def to_device(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 [B,H,W,3] host frames -> [B,3,H,W] on `device`: pinned + non-blocking on CUDA, zero-copy on the CPU."""
    t = torch.from_numpy(frames)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t.permute(0, 3, 1, 2)


def _cuda_video_frames(path: Path, batch: int, device: torch.device, max_bytes: int | None = None
                       ) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """NVDEC decode with torchcodec (the `affcli[gpu]` extra): frames stay on the GPU from the bitstream on."""
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(str(path), device=str(device), dimension_order="NCHW")
    n = len(dec)
    meta = dec.metadata
    batch = frames_per_batch(path, 3 * int(meta.width or 1) * int(meta.height or 1), batch, max_bytes)
    for start in range(0, n, batch):
        fb = dec.get_frames_in_range(start, min(n, start + batch))
        yield fb.data, fb.pts_seconds.cpu().numpy().astype(np.float64)


def nvdec_available(device: torch.device) -> bool:
    """True when the CUDA decode path can run: device is CUDA and torchcodec imports."""
    if device.type != "cuda":
        return False
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: use PyAV
        return False
    return True


@dataclass
class Decoder:
    """Decode stage: one video (or frame folder) at a time per worker, frames to the device, audio at the end."""

    device: torch.device
    batch: int
    crop_size: int
    frames_fps: float
    audio_path: Callable[[Source], Path | None]
    nvdec: bool = False
    max_bytes: int | None = None

    def _nvdec(self, path: Path) -> Iterator[tuple[torch.Tensor, np.ndarray]] | None:
        """The NVDEC iterator, or None (with one warning, and PyAV from then on) where torchcodec cannot decode on CUDA."""
        try:
            it = _cuda_video_frames(path, self.batch, self.device, self.max_bytes)
            first = next(it)
        except StopIteration:
            return iter(())
        except Exception as e:  # noqa: BLE001 - e.g. a CPU-only torchcodec build: fall back to PyAV
            self.nvdec = False
            warnings.warn(f"torchcodec cannot decode on {self.device} ({type(e).__name__}: {e}); decoding with PyAV",
                          stacklevel=2)
            return None
        return itertools.chain([first], it)

    def run(self, src: Source, need_audio: bool, out: queue.Queue, stop: threading.Event) -> None:
        try:
            if src.kind == "video":
                fps = probe_video(src.path).fps
                it = self._nvdec(src.path) if self.nvdec else None
                if it is None:
                    it = ((to_device(f, self.device), ts)
                          for f, ts in iter_video_frames(src.path, batch_size=self.batch, max_bytes=self.max_bytes))
                for frames, ts in it:
                    if not put(out, FrameBatch(src.video_id, frames, ts, np.ones(len(ts), bool)), stop):
                        return
            else:
                fps = self.frames_fps
                frame_folder_index(src.path)
                for frames, ts, ok in iter_frame_folder(src.path, batch_size=self.batch, fps=fps,
                                                        size=self.crop_size or None, max_bytes=self.max_bytes):
                    if not put(out, FrameBatch(src.video_id, to_device(frames, self.device), ts, ok), stop):
                        return
            wav, audio_err = None, None
            if need_audio:
                apath = self.audio_path(src)
                if apath is None:
                    audio_err = f"{src.path}: no video to take audio from; audio features marked invalid"
                else:
                    try:
                        wav = read_audio(apath, 16000)
                    except NoAudioError as e:
                        audio_err = f"{e}; audio features marked invalid"
            put(out, VideoEnd(src.video_id, fps, wav, audio_err), stop)
        except (MediaError, OSError, ValueError) as e:
            msg = str(e) if str(src.path) in str(e) else f"{src.path}: {e}"
            put(out, VideoError(src.video_id, msg), stop)
        except Exception as e:  # noqa: BLE001 - a decoder bug fails this video, not the run
            put(out, VideoError(src.video_id, f"{src.path}: {type(e).__name__}: {e}"), stop)


@dataclass
class _Pending:
    tracker: Tracker
    ts: list[np.ndarray] = field(default_factory=list)
    ok: list[np.ndarray] = field(default_factory=list)


class FaceStage:
    """Detect/track + crop stage: FrameBatch of frames -> FrameBatch of crops (per-video trackers, in order).

    The crop is what `settings` says (`settings.method`): "face": `detector` on every `detect_every`-th frame with
    tracks between, then aligned or box crops; "letterbox": whole frames; "pre-cropped": frame-folder faces, only
    resized to the crop size. `max_bytes` bounds the float copies of whole frames (made a few frames at a time) and
    the frames a tracker holds between key frames (a video that would need more fails in one line).
    """

    def __init__(self, settings: CropSettings, detector: Callable | None = None, cut: float = 0.12,
                 max_bytes: int | None = None):
        if settings.method == "face" and detector is None:
            raise ValueError(f"face stage: face detector {settings.detector!r} was not built")
        self.settings, self.detector, self.cut = settings, detector, float(cut)
        self.max_bytes = max_bytes
        self._open: dict[str, _Pending] = {}
        self._failed: set[str] = set()

    def __call__(self, msg: Any) -> list[Any]:
        """One message in, the messages to pass on out (a tracker may hold a few frames for the next batch)."""
        if msg.video_id in self._failed:  # failed here already: its later frames and its end are dropped
            if not isinstance(msg, FrameBatch):
                self._failed.discard(msg.video_id)
            return []
        if isinstance(msg, VideoError):
            self._open.pop(msg.video_id, None)
            return [msg]
        if isinstance(msg, VideoEnd):
            out = self._faces(msg.video_id, None, None, None, final=True) if msg.video_id in self._open else []
            self._open.pop(msg.video_id, None)
            return out + [msg]
        method, size = self.settings.method, self.settings.size
        if method != "face":
            crop = resize_frames if method == "pre-cropped" else letterbox
            crops = chunked(lambda f: crop(f, size), msg.frames, self.max_bytes)
            return [FrameBatch(msg.video_id, None, msg.ts, msg.ok, crops, msg.ok.copy())]
        problem = self._too_much_held(msg.frames)
        if problem:
            self._open.pop(msg.video_id, None)
            self._failed.add(msg.video_id)
            return [VideoError(msg.video_id, problem)]
        return self._faces(msg.video_id, msg.frames, msg.ts, msg.ok, final=False)

    def _too_much_held(self, frames: torch.Tensor) -> str | None:
        """Why a tracker cannot hold the up to k-1 frames between key frames within `max_bytes` (None: it can)."""
        k = self.settings.detect_every
        if self.max_bytes is None or k == 1 or not len(frames):
            return None
        held = (k - 1) * frames[0].numel()
        if held <= self.max_bytes:
            return None
        h, w = frames.shape[-2:]
        return (f"--detect-every {k} holds up to {k - 1} frames of {w}x{h} ({held / 2**20:,.0f} MiB) between key "
                f"frames, more than the {self.max_bytes / 2**20:,.0f} MiB a decode batch may take; lower "
                f"--detect-every or raise --decode-memory-mb")

    def _faces(self, vid: str, frames: torch.Tensor | None, ts: np.ndarray | None, ok: np.ndarray | None,
               final: bool) -> list[FrameBatch]:
        s = self.settings
        p = self._open.get(vid)
        if p is None:
            p = self._open[vid] = _Pending(Tracker(self.detector, s.detect_every, s.track_iou, self.cut,
                                                   max_bytes=self.max_bytes))
        if frames is None:
            if p.tracker.pending is None:
                return []
            frames = p.tracker.pending[:0]
        else:
            p.ts.append(ts)
            p.ok.append(ok)
        done, track = p.tracker.push(frames, final=final)
        r = len(done)
        if r == 0:
            return []
        ts_all, ok_all = np.concatenate(p.ts), np.concatenate(p.ok)
        p.ts, p.ok = [ts_all[r:]], [ok_all[r:]]
        valid = track.valid & torch.from_numpy(ok_all[:r]).to(track.valid.device)
        crops = chunked(lambda f, b, m, v: face_crops(f, b, m, v, s.size, bool(s.align), s.margin), done,
                        self.max_bytes, track.boxes, track.landmarks, valid)
        return [FrameBatch(vid, None, ts_all[:r], ok_all[:r], crops, valid.cpu().numpy(), _host_faces(track, valid))]


def _host_faces(track: FaceTrack, valid: torch.Tensor) -> dict[str, np.ndarray]:
    """The face arrays stored in the cache: NaN box/landmarks and score 0 where a frame has no face."""
    v = valid[:, None]
    nan = torch.tensor(float("nan"), device=valid.device)
    return {"box": torch.where(v, track.boxes, nan).cpu().numpy().astype(np.float32),
            "score": torch.where(valid, track.scores, torch.zeros_like(track.scores)).cpu().numpy().astype(np.float32),
            "landmarks": torch.where(v[..., None], track.landmarks, nan).cpu().numpy().astype(np.float32)}
