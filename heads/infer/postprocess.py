"""Post-processing of per-frame predictions: fill frames without a face from their neighbours, smooth, and decision
thresholds (per label of a multi-label output, e.g. each AU) and logit biases (per class, e.g. EXPR) tuned on the
validation split after training and stored in the run (metrics.json 'postprocess'), which predict/evaluate apply.

Everything is vectorised over frames: interpolation by cumulative max/min of neighbour indices, tuning by one
pass over a small grid of candidate values at a time.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affcli.common.runs import check_run_file, read_json
from affcli.heads.infer.evaluation import score
from affcli.heads.tasks import Output, get_task

FACE_MODALITY = "visual"
THRESHOLD_GRID = np.round(np.linspace(0.05, 0.95, 19), 4)
BIAS_GRID = np.round(np.linspace(-2.0, 2.0, 21), 4)


def smooth_rows(preds: dict[str, torch.Tensor], lengths: np.ndarray, radius: int) -> dict[str, torch.Tensor]:
    """Centred moving average over +-radius frames within each video (rows concatenated in video order)."""
    if radius <= 0 or not preds:
        return preds
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    L = np.repeat(lengths, lengths)
    lo = np.maximum(pos - radius, 0)
    hi = np.minimum(pos + radius, L - 1) + 1
    dev = next(iter(preds.values())).device
    lo_t, hi_t = torch.from_numpy(lo).to(dev), torch.from_numpy(hi).to(dev)
    base = torch.from_numpy(np.repeat(starts + np.arange(len(lengths)), lengths)).to(dev)
    out = {}
    for k, v in preds.items():
        cs = _video_cumsums(v.double(), starts, lengths)
        out[k] = ((cs[base + hi_t] - cs[base + lo_t]) / (hi_t - lo_t).unsqueeze(1)).to(v.dtype)
    return out


def _video_cumsums(v: torch.Tensor, starts: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
    """Each video's running sum with a leading zero row, videos concatenated ([n_rows + n_videos, dim]): a video's
    sums do not depend on the videos before it."""
    parts = []
    for s, n in zip(starts.tolist(), lengths.tolist()):
        parts += [v.new_zeros(1, v.shape[1]), v[s:s + n].cumsum(0)]
    return torch.cat(parts) if parts else v.new_zeros(0, v.shape[1])


def faceless(valid: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Frames without a face: the visual modality invalid (with no visual modality, every modality invalid)."""
    if not valid:
        return None
    if FACE_MODALITY in valid:
        return ~valid[FACE_MODALITY].bool()
    return ~torch.stack([v.bool() for v in valid.values()]).any(0)


def _neighbours(missing: torch.Tensor, lengths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row (videos concatenated): the previous and next row with a face in the same video, -1 if none."""
    n = missing.shape[0]
    dev = missing.device
    pos = torch.arange(n, device=dev)
    lengths_t = torch.as_tensor(np.asarray(lengths, np.int64), device=dev)
    first = torch.repeat_interleave(torch.cumsum(lengths_t, 0) - lengths_t, lengths_t)
    last = first + torch.repeat_interleave(lengths_t, lengths_t) - 1
    prev = torch.cummax(torch.where(missing, -1, pos), 0).values
    nxt = torch.flip(torch.cummin(torch.flip(torch.where(missing, n, pos), [0]), 0).values, [0])
    prev = torch.where(prev >= first, prev, -1)
    nxt = torch.where(nxt <= last, nxt, -1)
    return prev, nxt


def interpolate_missing(preds: dict[str, torch.Tensor], missing: torch.Tensor, lengths: np.ndarray,
                        outputs: Sequence[Output], mode: str = "linear") -> dict[str, torch.Tensor]:
    """Predictions on `missing` rows replaced from the nearest rows with a face in the same video.

    Values ('reg' outputs) are always linear between the two neighbours; class and multi-label probabilities are
    linear too with mode='linear', copied from the nearer neighbour with mode='nearest'. A row with one neighbour
    copies it; a video without any face keeps its predictions. Rows are videos concatenated in `lengths` order.
    """
    if mode == "off" or missing is None or not bool(missing.any()):
        return preds
    missing = missing.to(next(iter(preds.values())).device)
    prev, nxt = _neighbours(missing, lengths)
    pos = torch.arange(missing.shape[0], device=missing.device)
    has_p, has_n = prev >= 0, nxt >= 0
    gap = (nxt - prev).clamp_min(1).float()
    w = torch.where(has_p & has_n, (pos - prev).float() / gap, torch.where(has_n, 1.0, 0.0))
    near = torch.where(has_p & has_n, torch.where(w > 0.5, 1.0, 0.0), w)
    fill = missing & (has_p | has_n)
    kinds = {o.key: o.kind for o in outputs}
    out = {}
    for k, v in preds.items():
        a, b = v[prev.clamp_min(0)], v[nxt.clamp_min(0)]
        ww = (w if kinds.get(k, "reg") == "reg" or mode == "linear" else near).unsqueeze(1).to(v.dtype)
        out[k] = torch.where(fill.unsqueeze(1), (1 - ww) * a + ww * b, v)
    return out


def finish_rows(preds: dict[str, torch.Tensor], valid: dict[str, torch.Tensor], lengths: np.ndarray, task: str,
                interpolate: str, smooth: int) -> dict[str, torch.Tensor]:
    """The run's per-frame post-processing in order: interpolation over faceless frames, then smoothing.
    `valid` holds each modality's validity over the same rows as `preds`."""
    
    preds = interpolate_missing(preds, faceless(valid), lengths, get_task(task).outputs, interpolate)
    return smooth_rows(preds, lengths, smooth)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def tune_thresholds(probs: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None,
                    grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Per label, the threshold of `grid` with the best F1 on the valid entries (true >= 0, and mask); ties go to
    the threshold nearest 0.5, a label without valid entries keeps 0.5."""
    p, t = np.asarray(probs, np.float32), np.asarray(true)
    ok = t >= 0
    if mask is not None:
        m = np.asarray(mask, bool)
        ok &= m[:, None] if m.ndim == 1 else m
    pos, neg = ok & (t == 1), ok & (t == 0)
    f1 = np.stack([_f1(((p >= g) & pos).sum(0), ((p >= g) & neg).sum(0), ((p < g) & pos).sum(0)) for g in grid])
    best = np.argmax(f1 - 1e-9 * np.abs(np.asarray(grid) - 0.5)[:, None], 0)
    return np.where(ok.any(0), np.asarray(grid)[best], 0.5).astype(np.float64)


def _macro_f1(pred: np.ndarray, true: np.ndarray, n: int) -> float:
    conf = np.bincount(true * n + pred, minlength=n * n).reshape(n, n)
    tp = np.diag(conf)
    return float(_f1(tp, conf.sum(0) - tp, conf.sum(1) - tp).mean())


def tune_biases(probs: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None, grid: np.ndarray = BIAS_GRID,
                rounds: int = 2) -> np.ndarray:
    """Per-class logit biases maximising macro F1 of argmax(log p + b) on the valid frames (0 <= true < C, and
    mask): coordinate ascent over the classes, each step trying every `grid` value; ties keep the smaller |b|."""
    p, t = np.asarray(probs, np.float64), np.asarray(true).reshape(-1)
    n = p.shape[1]
    ok = (t >= 0) & (t < n) & (np.ones_like(t, bool) if mask is None else np.asarray(mask, bool).reshape(-1))
    logp, t = np.log(np.clip(p[ok], 1e-8, None)), t[ok].astype(np.int64)
    b = np.zeros(n)
    if t.size == 0:
        return b
    order = np.argsort(np.abs(grid), kind="stable")
    for _ in range(rounds):
        for c in range(n):
            scores = []
            for g in np.asarray(grid)[order]:
                bb = b.copy()
                bb[c] = g
                scores.append(_macro_f1((logp + bb).argmax(1), t, n))
            b[c] = np.asarray(grid)[order][int(np.argmax(scores))]
    return b


def tune(task: str, probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], thresholds: bool,
         biases: bool) -> dict[str, Any]:
    """Decision thresholds of each multi-label output and logit biases of each class output, tuned on one split."""
    out: dict[str, Any] = {}
    for o in get_task(task).outputs:
        if o.key not in probs:
            continue
        mask = labels.get(f"mask_{o.key}")
        if thresholds and o.kind == "multilabel":
            out.setdefault("thresholds", {})[o.key] = tune_thresholds(probs[o.key], labels[o.key], mask).tolist()
        if biases and o.kind == "class":
            out.setdefault("biases", {})[o.key] = tune_biases(probs[o.key], labels[o.key], mask).tolist()
    return out


def load_postprocess(run_dir: str | Path) -> dict[str, Any]:
    """The thresholds/biases a run stored after training ({} when it tuned none)."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return {}
    try:
        post = read_json(path).get("postprocess") or {}
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: unreadable ({type(e).__name__})") from None
    check_run_file(path)
    if not isinstance(post, dict):
        raise ValueError(f"{path}: its postprocess entry is not a table")
    return dict(post)


def tune_run(cfg: Any, data: Any, best: dict[str, Any]) -> dict[str, Any]:
    """After training: thresholds/biases tuned on the best epoch's val predictions (as cfg asks) and the val metrics
    with them; the run's `main` becomes the tuned one, the untuned figures stay as val_untuned / main_untuned."""
    if not (cfg.tune_thresholds or cfg.tune_bias):
        return {}
    rows = torch.as_tensor(best["rows"], device=data.device)
    labels = {k: v[rows].cpu().numpy() for k, v in data.labels.items()}
    post = tune(cfg.task, best["preds"], labels, cfg.tune_thresholds, cfg.tune_bias)
    tuned = score(cfg.task, best["preds"], labels, cfg.edition, **post)
    return {"postprocess": post, "val": tuned, "main": float(tuned["main"]), "val_untuned": best["metrics"],
            "main_untuned": best["main"]}
