"""Combining the per-frame outputs of several runs (an ensemble, or the fold models of a fold run): probabilities of
class and multi-label outputs averaged (or a majority vote of the members' own decisions), values averaged; member
weights fitted on labelled frames by greedy ensemble selection (Caruana et al., 2004).

numpy only: the outputs come from each member's own inference path (heads.infer.runs), post-processing included.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from affcli.heads.infer.evaluation import hard_predictions, score
from affcli.heads.tasks import get_task

METHODS = ("mean", "vote", "weighted")
TIE = 1e-3
"""Weight of the mean probability that breaks a tie of votes (kept far below one vote)."""
SELECTION_ROUNDS = 25


def check_method(method: str) -> str:
    """`method` if it is one of METHODS, else a one-line ValueError."""
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; valid: {', '.join(METHODS)}")
    return method


def _mean(arrays: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    w = weights / weights.sum()
    return np.tensordot(w, np.stack([np.asarray(a, np.float64) for a in arrays]), axes=1).astype(np.float32)


def combine(task: str, outputs: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float] | None = None,
            method: str = "mean", posts: Sequence[Mapping[str, Any]] | None = None) -> dict[str, np.ndarray]:
    """One set of per-frame outputs from several members' ({key: [n, dim]} each, same frames).

    mean / weighted: weighted mean of probabilities and values. vote: class outputs become the share of members whose
    decision (argmax with their tuned biases) is each class, multi-label outputs the share deciding 1 (their tuned
    thresholds); a tie is broken by the mean probability, so argmax / >= 0.5 of the result is the majority. Values
    (VA) are averaged under every method."""
    check_method(method)
    if not outputs:
        raise ValueError("ensemble: no member outputs to combine")
    w = np.asarray(weights if weights is not None else [1.0] * len(outputs), np.float64)
    if len(w) != len(outputs) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"ensemble: weights {w.tolist()} do not fit {len(outputs)} members (non-negative, not all 0)")
    posts = list(posts or [{}] * len(outputs))
    out: dict[str, np.ndarray] = {}
    for o in get_task(task).outputs:
        arrays = [m[o.key] for m in outputs if o.key in m]
        if not arrays:
            continue
        if len(arrays) != len(outputs):
            raise ValueError(f"ensemble: output {o.key!r} is missing from some members")
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"ensemble: members' {o.key} outputs differ in shape ({', '.join(map(str, shapes))})")
        mean = _mean(arrays, w)
        if method != "vote" or o.kind == "reg":
            out[o.key] = mean
            continue
        hard = [hard_predictions(task, {o.key: a}, **_post_of(p, o.key))[o.key] for a, p in zip(arrays, posts)]
        if o.kind == "class":
            votes = _mean([np.eye(o.dim, dtype=np.float32)[h] for h in hard], w)
            out[o.key] = ((votes + TIE * mean) / (1 + TIE)).astype(np.float32)
        else:
            share = _mean([h.astype(np.float32) for h in hard], w)
            out[o.key] = np.clip(share + TIE * (mean - 0.5), 0.0, 1.0).astype(np.float32)
    return out


def _post_of(post: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: {key: v[key]} for k, v in post.items() if isinstance(v, Mapping) and key in v}


def combined_postprocess(task: str, posts: Sequence[Mapping[str, Any]], weights: Sequence[float],
                         method: str) -> dict[str, Any]:
    """The decision rule of the combined outputs: with mean / weighted, the weighted mean of the members' tuned
    thresholds (0.5 where a member has none) and logit biases (0 where none); a vote decides by majority ({})."""
    if method == "vote" or not any(posts):
        return {}
    w = np.asarray(weights, np.float64) / float(np.sum(weights))
    out: dict[str, Any] = {}
    for o in get_task(task).outputs:
        for name, default in (("thresholds", 0.5), ("biases", 0.0)):
            if not any(o.key in (p.get(name) or {}) for p in posts):
                continue
            vals = [np.asarray((p.get(name) or {}).get(o.key, np.full(o.dim, default)), np.float64) for p in posts]
            out.setdefault(name, {})[o.key] = np.tensordot(w, np.stack(vals), axes=1).tolist()
    return out


def fit_weights(task: str, outputs: Sequence[Mapping[str, np.ndarray]], labels: Mapping[str, np.ndarray],
                edition: str = "abaw3+", posts: Sequence[Mapping[str, Any]] | None = None,
                rounds: int = SELECTION_ROUNDS) -> tuple[list[float], float]:
    """Member weights maximising the task's main metric on labelled frames: greedy ensemble selection with
    replacement (each round adds the member that helps most), started from the best single member and compared with
    equal weights; the best bag seen wins. Returns (weights summing to 1, its score), never below the best member's
    or the plain mean's score on these frames."""
    n = len(outputs)
    posts = list(posts or [{}] * n)

    def value(counts: np.ndarray) -> float:
        w = counts.astype(np.float64)
        post = combined_postprocess(task, posts, w, "weighted")
        s = score(task, combine(task, outputs, w, "weighted", posts), dict(labels), edition, **post)["main"]
        return float(s) if np.isfinite(s) else -np.inf

    singles = [value(np.eye(n)[i]) for i in range(n)]
    counts = np.eye(n)[int(np.argmax(singles))]
    best_counts, best = counts.copy(), max(singles)
    uniform = value(np.ones(n))
    if uniform > best:
        best_counts, best = np.ones(n), uniform
    for _ in range(rounds):
        trials = [value(counts + np.eye(n)[i]) for i in range(n)]
        i = int(np.argmax(trials))
        counts = counts + np.eye(n)[i]
        if trials[i] > best + 1e-12:
            best_counts, best = counts.copy(), trials[i]
    w = best_counts / best_counts.sum()
    return [float(x) for x in w], best
