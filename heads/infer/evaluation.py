"""A task's official score from model outputs: probabilities / values -> hard predictions -> the task record's scorer
(the metric formulas themselves are in heads.metrics; scoring ABAW files on disk is heads.score_files)."""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import numpy as np

from affcli.heads.tasks import Output, Task, get_task

ZERO_DIVISION = (0, 1)
FRAMES = ("own", "complete")


def _task(task: str | Task) -> Task:
    return get_task(task) if isinstance(task, str) else task


def hard_predictions(task: str | Task, probs: dict[str, np.ndarray], threshold: float = 0.5,
                     thresholds: Mapping[str, Sequence[float]] | None = None,
                     biases: Mapping[str, Sequence[float]] | None = None) -> dict[str, np.ndarray]:
    """Per output: class ids (argmax of log p + the output's logit biases, if given), 0/1 labels (probability >=
    the output's per-label thresholds, else `threshold`) or values; other keys are left out."""
    out = {}
    for o in _task(task).outputs:
        if o.key not in probs:
            continue
        p = np.asarray(probs[o.key])
        if o.kind == "class" and biases and o.key in biases:
            p = np.log(np.clip(p, 1e-8, None)) + np.asarray(biases[o.key], np.float64)
        thr = np.asarray(thresholds[o.key], np.float64) if thresholds and o.key in thresholds else threshold
        out[o.key] = o.hard(p, thr)
    return out


def frame_valid(o: Output, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Frames where output `o` is fully labelled: not its invalid marker (every column), within the classes, mask."""
    y = np.asarray(y)
    ok = ~np.isclose(y, o.invalid)
    if o.kind == "class":
        ok &= (y >= 0) & (y < o.dim)
    ok = ok.reshape(len(y), -1).all(1)
    if mask is not None:
        m = np.asarray(mask, bool)
        ok &= m.reshape(len(y), -1).all(1)
    return ok


def restrict_to_complete(task: str | Task, labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Labels whose masks keep only the frames on which every output of the task is labelled."""
    t = _task(task)
    full = np.logical_and.reduce([frame_valid(o, labels[o.key], labels.get(f"mask_{o.key}")) for o in t.outputs])
    return {**labels, **{f"mask_{o.key}": full for o in t.outputs}}


def score_task(task: str | Task, preds: dict[str, np.ndarray], labels: dict[str, np.ndarray],
               edition: str = "abaw3+", zero_division: int = 0, frames: str = "own") -> dict:
    """Official metrics of a task from hard predictions and dense labels (+ optional mask_<key>); 'main' = headline.

    The convention: `zero_division` is the F1 of a class/label with neither labels nor predictions (0 as the
    official scripts; 1 inflates), `frames` which frames count: each output on its own labelled frames ('own') or
    only frames labelled for every output ('complete', as some MTL papers scored)."""
    t = _task(task)
    for k in t.keys:
        if k not in preds or k not in labels:
            raise KeyError(f"score_task({t.name}): needs {k!r} in both predictions and labels "
                           f"(have {sorted(preds)} and {sorted(labels)})")
    if zero_division not in ZERO_DIVISION:
        raise ValueError(f"zero_division must be 0 or 1, not {zero_division!r}")
    if frames not in FRAMES:
        raise ValueError(f"frames must be one of {', '.join(FRAMES)}, not {frames!r}")
    if frames == "complete":
        labels = restrict_to_complete(t, labels)
    if zero_division:
        if "zero_division" not in inspect.signature(t.scorer).parameters:
            raise ValueError(f"task {t.name}: its scorer takes no zero_division; score it with zero_division 0")
        out = t.scorer(preds, labels, edition, zero_division=zero_division)
    else:
        out = t.scorer(preds, labels, edition)
    return {**out, "main": out[t.main_metric]}


def score(task: str | Task, probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], edition: str = "abaw3+",
          threshold: float = 0.5, thresholds: Mapping[str, Sequence[float]] | None = None,
          biases: Mapping[str, Sequence[float]] | None = None) -> dict:
    """Official metrics of a split (dict with 'main') from per-frame probabilities and dense labels; `thresholds`
    and `biases` are a run's tuned post-processing (heads.postprocess)."""
    return score_task(task, hard_predictions(task, probs, threshold, thresholds, biases), labels, edition)
