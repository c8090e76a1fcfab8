"""Window plans for audio transformers: overlapping chunks for `centered`, trailing windows for `causal`.

Both feed equal-length windows to the model and return, per window, the sample offset of its first sample (may be
negative: left zero padding) and the sample where it ends. Centred chunks go in batches; causal windows go one per
forward (`CausalPlan`), so `stream` computing them live gets the same numbers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from affcli.pipeline.backbones.base import CausalPlan, Steps


def centered_starts(n: int, length: int, hop: int) -> np.ndarray:
    """Chunk starts covering [0, n) with chunks of `length` every `hop`; the last chunk ends exactly at n."""
    if n <= length:
        return np.zeros(1, np.int64)
    starts = np.arange(0, n - length, hop, dtype=np.int64)
    return np.unique(np.append(starts, n - length))


def causal_ends(n: int, hop: int) -> np.ndarray:
    """Window ends every `hop` samples, plus the end of the audio."""
    return np.unique(np.append(np.arange(hop, n + 1, hop, dtype=np.int64), n))


def batched_windows(wav: np.ndarray, starts: np.ndarray, length: int, batch: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (index slice, float32 [b, length]) windows wav[s:s+length], zero padded outside the audio."""
    lpad = int(max(0, -starts.min()))
    rpad = int(max(0, starts.max() + length - len(wav)))
    padded = np.pad(wav, (lpad, rpad)) if lpad or rpad else wav
    view = np.lib.stride_tricks.sliding_window_view(padded, length)
    for i in range(0, len(starts), batch):
        sl = slice(i, min(i + batch, len(starts)))
        yield sl, np.ascontiguousarray(view[starts[sl] + lpad], dtype=np.float32)


def run_centered(wav: np.ndarray, sr: int, length: int, overlap: int, batch: int,
                 model: Callable[[np.ndarray], np.ndarray], local_centres: Callable[[int], np.ndarray]) -> Steps:
    """One pass per overlapping chunk; each step is kept by the chunk whose core (overlap cut in half) holds it."""
    n = len(wav)
    length = min(length, n)
    starts = centered_starts(n, length, max(1, length - overlap))
    ends = starts + length
    bounds = np.concatenate([[-np.inf], (starts[1:] + ends[:-1]) / 2.0, [np.inf]])
    feats, centres, stop = [], [], []
    for sl, x in batched_windows(wav, starts, length, batch):
        out = model(x)
        loc = local_centres(out.shape[1])
        for j, i in enumerate(range(sl.start, sl.stop)):
            c = starts[i] + loc
            keep = (c >= bounds[i]) & (c < bounds[i + 1]) & (c <= n)
            feats.append(out[j][keep])
            centres.append(c[keep] / sr)
            stop.append(np.full(int(keep.sum()), ends[i] / sr))
    return Steps(np.concatenate(feats).astype(np.float32), np.concatenate(centres), np.concatenate(stop))


def causal_window(wav: np.ndarray, offset: int, end: int, plan: CausalPlan) -> tuple[np.ndarray, float]:
    """The window of `plan` ending at sample `end`, from `wav` (which holds samples offset.. of the audio, at least from
    end - length on, zeros before 0), run alone: (its last step [dim], its centre in samples)."""
    start = end - plan.length
    lo = max(0, start)
    x = np.zeros((1, plan.length), np.float32)
    x[0, lo - start:] = wav[lo - offset:end - offset]
    out = plan.forward(x)
    return out[0, -1], start + float(plan.local_centres(out.shape[1])[-1])


def run_causal(wav: np.ndarray, sr: int, plan: CausalPlan) -> Steps:
    """One pass per trailing window wav[e-length:e] (zeros before 0) every `hop`, each alone; keeps its last step."""
    ends = causal_ends(len(wav), plan.hop)
    feats, centres = [], []
    for e in ends:
        f, c = causal_window(wav, 0, int(e), plan)
        feats.append(f)
        centres.append(c / sr)
    return Steps(np.stack(feats).astype(np.float32), np.asarray(centres), ends / sr)
