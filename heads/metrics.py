"""Official ABAW metric functions on arrays (FORMATS.md): CCC with population moments, macro / per-AU F1 with
zero_division=0, pooled over all valid frames of all videos. Which metric a task uses is its record (heads.tasks)."""
from __future__ import annotations

import numpy as np

EDITIONS = ("abaw3+", "abaw1-2")


def _edition(edition: str) -> str:
    if edition not in EDITIONS:
        raise ValueError(f"unknown edition {edition!r}; valid editions: {', '.join(EDITIONS)}")
    return edition


def _mask(true: np.ndarray, mask: np.ndarray | None, valid: np.ndarray) -> np.ndarray:
    """Element mask: the label's own validity and the given per-frame [N] or per-element mask."""
    if mask is None:
        return valid
    m = np.asarray(mask, bool)
    while m.ndim < valid.ndim:
        m = m[..., None]
    return valid & np.broadcast_to(m, valid.shape)


def f1_per_label(true: np.ndarray, pred: np.ndarray, labels: list[int], zero_division: float = 0) -> np.ndarray:
    """F1 of each label, bit-equal to sklearn's f1_score(average=None, labels=...): 2 tp / (n_true + n_pred) in
    float64, `zero_division` where a label is neither true nor predicted (numpy: no 1 s sklearn import per process)."""
    lab = np.asarray(labels)
    is_true, is_pred = true.reshape(-1, 1) == lab, pred.reshape(-1, 1) == lab
    tp = (is_true & is_pred).sum(0).astype(np.float64)
    den = is_true.sum(0).astype(np.float64) + is_pred.sum(0)
    return np.where(den > 0, 2.0 * tp / np.where(den > 0, den, 1.0), float(zero_division))


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Concordance correlation 2cov / (var x + var y + (mean x - mean y)^2), population moments; 0 when undefined."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"ccc: prediction has {x.size} values, ground truth {y.size}")
    if x.size == 0:
        return 0.0
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    den = x.var() + y.var() + (mx - my) ** 2
    return float(2 * cov / den) if den > 0 else 0.0


def va_score(pred: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """CCC of valence and arousal over their valid frames (true != -5, and mask) and P_VA = their mean."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    m = _mask(true, mask, ~np.isclose(true, -5.0))
    cv, ca = ccc(pred[m[:, 0], 0], true[m[:, 0], 0]), ccc(pred[m[:, 1], 1], true[m[:, 1], 1])
    return {"ccc_valence": cv, "ccc_arousal": ca, "p_va": (cv + ca) / 2, "n_va": int(m.all(1).sum())}


def expr_score(pred_labels: np.ndarray, true: np.ndarray, n_classes: int | None = None, edition: str = "abaw3+",
               mask: np.ndarray | None = None, zero_division: int = 0) -> dict:
    """Macro F1 over all classes (labels given explicitly: an absent class scores 0) and accuracy on valid frames.

    abaw3+: 8 classes, P_EXPR = F1. abaw1-2: 7 classes (frames labelled Other are left out), 0.67 F1 + 0.33 acc.
    """
    edition = _edition(edition)
    s = class_score(pred_labels, true, n_classes or (8 if edition == "abaw3+" else 7), mask, zero_division)
    main = s["f1_macro"] if edition == "abaw3+" else 0.67 * s["f1_macro"] + 0.33 * s["acc"]
    return {"f1_macro": s["f1_macro"], "acc": s["acc"], "p_expr": main, "f1_per_class": s["f1_per_class"],
            "n_expr": s["n"]}


def class_score(pred_labels: np.ndarray, true: np.ndarray, n_classes: int, mask: np.ndarray | None = None,
                zero_division: int = 0) -> dict:
    """Macro F1 over classes 0..n-1 (an absent class scores 0, zero_division=0), per-class F1 and accuracy over the
    valid frames (0 <= true < n, and mask)."""
    pred, true = np.asarray(pred_labels).reshape(-1), np.asarray(true).reshape(-1)
    m = _mask(true, mask, (true >= 0) & (true < n_classes))
    p, t = pred[m], true[m]
    per = f1_per_label(t, p, list(range(n_classes)), zero_division) if t.size else np.zeros(n_classes)
    acc = float(np.mean(t == p)) if t.size else 0.0
    return {"f1_macro": float(np.mean(per)), "acc": acc, "f1_per_class": [float(v) for v in per], "n": int(t.size)}


def au_score(pred_bin: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None, edition: str = "abaw3+",
             zero_division: int = 0) -> dict:
    """Binary F1 of each AU over its valid frames (true != -1, and mask; zero_division=0), their mean and accuracy.

    abaw3+: P_AU = mean F1. abaw1-2: 0.5 mean F1 + 0.5 accuracy (over all valid AU entries).
    """
    edition = _edition(edition)
    pred, true = np.asarray(pred_bin), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"au_score: prediction shape {pred.shape} != ground truth {true.shape}")
    m = _mask(true, mask, true >= 0)
    per = [float(f1_per_label(true[m[:, j], j], pred[m[:, j], j], [1], zero_division)[0])
           if m[:, j].any() else 0.0 for j in range(true.shape[1])]
    f1 = float(np.mean(per))
    acc = float((pred[m] == true[m]).mean()) if m.any() else 0.0
    main = f1 if edition == "abaw3+" else 0.5 * f1 + 0.5 * acc
    return {"f1_per_au": per, "f1_mean": f1, "acc_au": acc, "p_au": main, "n_au": int(m.all(1).sum())}

