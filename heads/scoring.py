"""Bridge from head outputs (probabilities / values) to the official scorer in heads.metrics."""
from __future__ import annotations

import numpy as np


def hard_predictions(probs: dict[str, np.ndarray], au_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Class ids for EXPR/LSD, VA values, 0/1 AUs at the threshold."""
    out = {}
    for k, p in probs.items():
        if k in ("expr", "lsd"):
            out[k] = p.argmax(-1).astype(np.int64)
        elif k == "au":
            out[k] = (p >= au_threshold).astype(np.int64)
        else:
            out[k] = p.astype(np.float32)
    return out


def score(task: str, probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], edition: str = "abaw3+") -> dict:
    """Official metrics of a split (dict with 'main') from per-frame probabilities and dense labels."""
    from affcli.heads.metrics import score_task

    return score_task(task, hard_predictions(probs), labels, edition)


def expr_classes() -> list[str]:
    """EXPR class names in label order."""
    try:
        from affcli.heads.labels import EXPR_CLASSES

        return list(EXPR_CLASSES)
    except ImportError:
        return ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"]
