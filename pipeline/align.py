"""Map time-resolved audio steps (Wav2Vec2 ~50 Hz, AST ~10 Hz) to video frame timestamps.

Each step has a centre time and the time its receptive window ends (for a transformer that is the end of
the chunk or window it was computed in, since attention sees all of it).

- `centered`: linear interpolation between step centres at the frame time; frames before the first
  centre or after the last one take that step.
- `causal`: a frame at time t takes the step with the latest centre among those whose window ends at or
  before t, so nothing later than t can reach it. Frames before the first such step have no features:
  zeros and valid=False (we never borrow a future step to fill them).
- Both: frames before 0 or after the end of the audio are valid=False with zero features.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

EPS = 1e-9


def _interpolate(feats: np.ndarray, centre: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Row-wise linear interpolation of feats [T,D] sampled at sorted `centre` to times `t` (clamped at the ends)."""
    if len(centre) == 1:
        return np.repeat(feats[:1], len(t), axis=0)
    tc = np.clip(t, centre[0], centre[-1])
    hi = np.clip(np.searchsorted(centre, tc, side="right"), 1, len(centre) - 1)
    lo = hi - 1
    span = centre[hi] - centre[lo]
    w = np.where(span > 0, (tc - centre[lo]) / np.where(span > 0, span, 1.0), 0.0)[:, None]
    return (1.0 - w) * feats[lo] + w * feats[hi]


def _causal_pick(centre: np.ndarray, end: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the latest-centred step whose window ends at or before each t (ties: later end), or -1 if none."""
    order = np.lexsort((centre, end))
    cen = centre[order]
    running = np.maximum.accumulate(cen)
    best = order[np.maximum.accumulate(np.where(cen >= running, np.arange(len(cen)), 0))]
    j = np.searchsorted(end[order], t + EPS, side="right") - 1
    return np.where(j >= 0, best[np.clip(j, 0, None)], -1)


def align_steps(feats: np.ndarray, centre: np.ndarray, end: np.ndarray, frame_times: np.ndarray,
                policy: Literal["centered", "causal"], duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps (feats [T,D], centre [T], end [T] in s) -> (float32 [F,D], valid bool [F]) at frame_times [F]."""
    feats = np.asarray(feats, np.float32)
    centre = np.asarray(centre, np.float64)
    end = np.asarray(end, np.float64)
    t = np.asarray(frame_times, np.float64).reshape(-1)
    out = np.zeros((len(t), feats.shape[1] if feats.ndim == 2 else 0), np.float32)
    inside = (t >= -EPS) & (t <= duration + EPS)
    if len(centre) == 0:
        return out, np.zeros(len(t), bool)
    if policy == "centered":
        order = np.argsort(centre, kind="stable")
        out[inside] = _interpolate(feats[order], centre[order], t[inside])
        return out, inside
    if policy == "causal":
        pick = _causal_pick(centre, end, t)
        valid = inside & (pick >= 0)
        out[valid] = feats[pick[valid]]
        return out, valid
    raise ValueError(f"alignment must be 'centered' or 'causal', got {policy!r}")
