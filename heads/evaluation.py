"""A task's official score from model outputs: probabilities / values -> hard predictions -> the task record's scorer
(the metric formulas themselves are in heads.metrics; scoring ABAW files on disk is heads.score_files)."""
from __future__ import annotations

import numpy as np

from affcli.heads.tasks import Task, get_task


def _task(task: str | Task) -> Task:
    return get_task(task) if isinstance(task, str) else task


def hard_predictions(task: str | Task, probs: dict[str, np.ndarray], threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Per output: class ids (argmax), 0/1 labels (probability >= threshold) or values; other keys are left out."""
    return {o.key: o.hard(np.asarray(probs[o.key]), threshold) for o in _task(task).outputs if o.key in probs}


def score_task(task: str | Task, preds: dict[str, np.ndarray], labels: dict[str, np.ndarray],
               edition: str = "abaw3+") -> dict:
    """Official metrics of a task from hard predictions and dense labels (+ optional mask_<key>); 'main' = headline."""
    t = _task(task)
    for k in t.keys:
        if k not in preds or k not in labels:
            raise KeyError(f"score_task({t.name}): needs {k!r} in both predictions and labels "
                           f"(have {sorted(preds)} and {sorted(labels)})")
    out = t.scorer(preds, labels, edition)
    return {**out, "main": out[t.main_metric]}


def score(task: str | Task, probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], edition: str = "abaw3+",
          threshold: float = 0.5) -> dict:
    """Official metrics of a split (dict with 'main') from per-frame probabilities and dense labels."""
    return score_task(task, hard_predictions(task, probs, threshold), labels, edition)
