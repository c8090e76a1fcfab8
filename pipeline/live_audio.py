"""Causal audio features of a live stream: the waveform arrives chunk by chunk, and each window of an audio backbone's
causal plan runs once, alone, as soon as its last sample is there.

Extraction with `--audio-align causal` computes the same windows (`backbones.windows.run_causal`: trailing windows
ending every hop and at the end of the audio, one per forward) over the whole track and maps them to frame times
with `align.align_steps`; here the same windows and the same rule are applied to the samples received so far, so a
frame at time t gets the feature extraction stored for it, from samples up to t only.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from affcli.pipeline.align import EPS, align_steps
from affcli.pipeline.backbones.base import AudioBackbone, CausalPlan
from affcli.pipeline.backbones.windows import causal_window


class LiveWaveform:
    """The samples of a chunk iterator read so far (only the tail the windows still need is kept): `n` samples, and
    whether the track has `ended` (then `n` is its length)."""

    def __init__(self, chunks: Iterator[np.ndarray]):
        self._chunks = chunks
        self.buf, self.offset, self.n, self.ended = np.zeros(0, np.float32), 0, 0, False

    def pull(self, upto: int) -> None:
        """Read chunks until `upto` samples are in, or the track ends."""
        parts = [self.buf]
        n = self.n
        while n < upto and not self.ended:
            try:
                chunk = np.asarray(next(self._chunks), np.float32).reshape(-1)
            except StopIteration:
                self.ended = True
                break
            parts.append(chunk)
            n += len(chunk)
        if len(parts) > 1:
            self.buf, self.n = np.concatenate(parts), n

    def forget(self, before: int) -> None:
        """Drop the samples before `before` (no window needs them any more)."""
        cut = min(len(self.buf), max(0, before - self.offset))
        if cut:
            self.buf, self.offset = self.buf[cut:], self.offset + cut


class LiveCausalAudio:
    """One audio backbone's causal features at the frames' times, from its own `LiveWaveform` (it drops what its
    windows no longer need; None: no audio, every frame invalid, as extraction stores a video without audio)."""

    def __init__(self, backbone: AudioBackbone, wave: LiveWaveform | None):
        self.backbone, self.wave = backbone, wave
        self.plan: CausalPlan = backbone.causal_plan()
        self.sr = int(backbone.sample_rate)
        self.k = 1                    # the next window ends at k * hop
        self.final_done = False       # the window ending at the end of the track (when that is not on the hop grid)
        self.steps: list[tuple[np.ndarray, float, float]] = []  # (feature, centre s, end s), the latest last
        self.windows = 0

    def _run(self, end: int) -> None:
        f, centre = causal_window(self.wave.buf, self.wave.offset, end, self.plan)
        self.steps = (self.steps + [(np.asarray(f, np.float32), centre / self.sr, end / self.sr)])[-2:]
        self.windows += 1

    def at(self, t: float) -> tuple[np.ndarray, bool]:
        """(feature [dim] float32, valid) of the frame at time `t` (s); frames come in time order."""
        dim = self.backbone.dim
        w = self.wave
        if w is None:
            return np.zeros(dim, np.float32), False
        w.pull(int(np.floor(t * self.sr)) + 1)  # every window ending at or before t, and whether t is inside
        hop, limit = self.plan.hop, (t + EPS) * self.sr
        while self.k * hop <= w.n and self.k * hop <= limit:
            self._run(self.k * hop)
            self.k += 1
        if w.ended and not self.final_done and w.n % hop and w.n <= limit and w.n > 0:
            self._run(w.n)
            self.final_done = True
        w.forget(min(self.k * hop, w.n) - self.plan.length - hop)
        if not self.steps or (w.ended and w.n == 0):
            return np.zeros(dim, np.float32), False
        feats = np.stack([s[0] for s in self.steps])
        centre, end = np.array([s[1] for s in self.steps]), np.array([s[2] for s in self.steps])
        duration = w.n / self.sr if w.ended else max(w.n / self.sr, t)
        f, ok = align_steps(feats, centre, end, np.array([t]), "causal", duration)
        return f[0], bool(ok[0])
