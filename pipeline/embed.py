"""Embed stage of `extract`: full backbone batches across video boundaries, audio at each video's end.

Crops of several videos in flight share a batch; each video's rows are split back out in order. A video is
finished (-> VideoDone) once its end has arrived and none of its crops wait in the batch; a partial batch is
only run when a finished video waits on it and nothing else is coming (`flush`), or at the end of the run.

A visual backbone always runs forwards of the same shape (`forward_rows` rows, the last one padded with zero crops,
`embed_visual`): kernels round differently for another number of rows, and the features are stored in float16, where
such a difference flips the last bit; with one shape a frame's features do not depend on its batch-mates, and
`stream`, padding its one frame the same way, gets the stored features bit for bit.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from affcli.cache.store import FaceRecord
from affcli.pipeline.stages import FrameBatch, VideoDone, VideoEnd, VideoError


FORWARD_ROWS = {"cpu": 8}
GPU_FORWARD_ROWS = 64


def forward_rows(device: torch.device | str) -> int:
    """Rows of every visual backbone forward on `device`: a few on the CPU (its kernels are as fast per row), more on
    a GPU (it needs them to be busy)."""
    return FORWARD_ROWS.get(torch.device(device).type, GPU_FORWARD_ROWS)


def embed_visual(backbone: Any, crops: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 crops ([n,3,S,S] tensor or [n,S,S,3] array) -> float32 [n, dim], in forwards of exactly
    `forward_rows(backbone.device)` rows (zero crops pad the last): a row's features never depend on the others."""
    rows = forward_rows(backbone.device)
    n = len(crops)
    out = []
    for a in range(0, n, rows):
        x = crops[a:a + rows]
        k = len(x)
        if k < rows:
            pad = (rows - k, *x.shape[1:])
            x = torch.cat([x, x.new_zeros(pad)]) if isinstance(x, torch.Tensor) else \
                np.concatenate([x, np.zeros(pad, x.dtype)])
        out.append(backbone.embed(backbone.preprocess(x)).float().numpy()[:k])
    return np.concatenate(out) if out else np.zeros((0, backbone.dim), np.float32)


@dataclass
class _Video:
    source: Any
    ts: list[np.ndarray] = field(default_factory=list)
    valid: list[np.ndarray] = field(default_factory=list)
    faces: list[dict[str, np.ndarray]] = field(default_factory=list)
    chunks: dict[str, list[np.ndarray]] = field(default_factory=dict)
    queued: int = 0
    end: VideoEnd | None = None


@dataclass
class _Part:
    video_id: str
    crops: torch.Tensor
    valid: np.ndarray


class Embedder:
    """Feeds crops to every visual backbone in batches of `batch_size`, audio backbones per finished video."""

    def __init__(self, visual: list, audio: list, batch_size: int, audio_align: str, todo: dict[str, list[str]],
                 sources: dict[str, Any], face_attrs: dict[str, Any] | None,
                 progress: Callable[[str, dict], None] = lambda e, i: None):
        self.visual, self.audio, self.batch_size = visual, audio, int(batch_size)
        self.audio_align, self.todo, self.sources, self.face_attrs = audio_align, todo, sources, face_attrs
        self.progress = progress
        self.videos: dict[str, _Video] = {}
        self.pending: list[_Part] = []
        self.pending_n = 0
        self.frames = 0
        self.seconds: dict[str, float] = {}

    def feed(self, msg: Any) -> list[VideoDone | VideoError]:
        """Take one message of the face stage; return the videos that are now complete (or failed)."""
        vid = msg.video_id
        if isinstance(msg, VideoError):
            self.videos.pop(vid, None)
            self._drop(vid)
            return [msg]
        v = self.videos.setdefault(vid, _Video(self.sources[vid]))
        if isinstance(msg, VideoEnd):
            v.end = msg
            return self._finish(vid) if v.queued == 0 else []
        assert isinstance(msg, FrameBatch)
        v.ts.append(np.asarray(msg.ts, np.float64))
        v.valid.append(np.asarray(msg.valid, bool))
        if msg.faces is not None:
            v.faces.append(msg.faces)
        if any(b.spec in self.todo[vid] for b in self.visual) and len(msg.ts):
            self.pending.append(_Part(vid, msg.crops, v.valid[-1]))
            self.pending_n += len(msg.ts)
            v.queued += len(msg.ts)
        self.progress("frames", {"n": len(msg.ts)})
        out: list[VideoDone | VideoError] = []
        while self.pending_n >= self.batch_size:
            out += self._run(self.batch_size)
        return out

    def waiting(self) -> bool:
        """True when a video whose end has arrived still has crops in the partial batch."""
        return any(v.end is not None and v.queued for v in self.videos.values())

    def flush(self) -> list[VideoDone | VideoError]:
        """Run what is pending, in batches of at most batch_size."""
        out: list[VideoDone | VideoError] = []
        while self.pending_n:
            out += self._run(min(self.batch_size, self.pending_n))
        return out

    def _drop(self, vid: str) -> None:
        keep = [p for p in self.pending if p.video_id != vid]
        self.pending_n = sum(len(p.valid) for p in keep)
        self.pending = keep

    def _take(self, n: int) -> list[_Part]:
        parts, left = [], n
        while left:
            p = self.pending[0]
            if len(p.valid) <= left:
                parts.append(self.pending.pop(0))
                left -= len(p.valid)
            else:
                parts.append(_Part(p.video_id, p.crops[:left], p.valid[:left]))
                self.pending[0] = _Part(p.video_id, p.crops[left:], p.valid[left:])
                left = 0
        self.pending_n -= n
        return parts

    def _run(self, n: int) -> list[VideoDone | VideoError]:
        parts = self._take(n)
        counts = [len(p.valid) for p in parts]
        valid = np.concatenate([p.valid for p in parts])
        try:
            x = torch.cat([p.crops for p in parts])
            for b in self.visual:
                if not any(b.spec in self.todo[p.video_id] for p in parts):
                    continue
                e = embed_visual(b, x)
                e[~valid] = 0.0
                for p, rows in zip(parts, np.split(e, np.cumsum(counts)[:-1])):
                    if p.video_id in self.videos:
                        self.videos[p.video_id].chunks.setdefault(b.spec, []).append(rows)
        except Exception as e:  # noqa: BLE001 - a failing batch fails its videos, not the run
            out = []
            for vid in dict.fromkeys(p.video_id for p in parts):
                if vid in self.videos:
                    src = self.videos.pop(vid).source
                    self._drop(vid)
                    out.append(VideoError(vid, f"{src.path}: {type(e).__name__}: {e}"))
            return out
        self.frames += n
        out = []
        for p in parts:
            v = self.videos.get(p.video_id)
            if v is not None:
                v.queued -= len(p.valid)
        for vid in dict.fromkeys(p.video_id for p in parts):
            v = self.videos.get(vid)
            if v is not None and v.end is not None and v.queued == 0:
                out += self._finish(vid)
        return out

    def _finish(self, vid: str) -> list[VideoDone | VideoError]:
        v = self.videos.pop(vid)
        path = v.source.path
        try:
            if not v.ts:
                return [VideoError(vid, f"{path}: no frames decoded")]
            ts, vvalid = np.concatenate(v.ts), np.concatenate(v.valid)
            n, todo, notes = len(ts), self.todo[vid], []
            feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for b in self.visual:
                if b.spec in todo:
                    f = np.concatenate(v.chunks[b.spec]) if v.chunks.get(b.spec) else np.zeros((0, b.dim), np.float32)
                    feats[b.spec] = (f, vvalid)
            if self.visual and n and not vvalid.any():
                notes.append(f"{path}: no face found in any of {n} frames; visual features marked invalid")
            for b in self.audio:
                if b.spec not in todo:
                    continue
                if v.end.wav is None:
                    feats[b.spec] = (np.zeros((n, b.dim), np.float32), np.zeros(n, bool))
                else:
                    f, ok = b.embed_audio(v.end.wav, ts, self.audio_align)
                    f = np.asarray(f, np.float32).copy()
                    f[~ok] = 0.0
                    feats[b.spec] = (f, np.asarray(ok, bool))
            if v.end.audio_err and self.audio:
                notes.append(v.end.audio_err)
            faces = None
            if v.faces and self.face_attrs is not None:
                faces = FaceRecord(*(np.concatenate([f[k] for f in v.faces]) for k in ("box", "score", "landmarks")),
                                   attrs=dict(self.face_attrs))
            return [VideoDone(vid, feats, ts, v.end.fps, faces, notes)]
        except Exception as e:  # noqa: BLE001 - one video's audio/model failure fails that video only
            msg = str(e) if str(path) in str(e) else f"{path}: {type(e).__name__}: {e}"
            return [VideoError(vid, msg)]
