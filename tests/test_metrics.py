"""Official ABAW metrics: CCC by hand, F1 against scikit-learn, zero_division=0, masks, editions, P_MTL."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from affcli.common.registry import UnknownNameError
from affcli.heads.infer.evaluation import hard_predictions, score, score_task
from affcli.heads.metrics import au_score, ccc, class_score, expr_score, va_score
from affcli.heads.tasks import TASKS, get_task


def test_ccc_by_hand() -> None:
    # means 2 and 7/3, population variances 2/3 and 14/9, covariance 1: 2 / (2/3 + 14/9 + 1/9) = 6/7
    assert ccc(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0])) == pytest.approx(6 / 7, abs=1e-12)
    x = np.random.default_rng(0).standard_normal(500)
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x + 0.5, x) < 1.0
    z = x - x.mean()
    assert ccc(-z, z) == pytest.approx(-1.0)
    assert ccc(np.ones(4), np.ones(4)) == 0.0


def test_ccc_population_moments() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(7), rng.standard_normal(7)
    c = np.cov(x, y, bias=True)
    assert ccc(x, y) == pytest.approx(2 * c[0, 1] / (c[0, 0] + c[1, 1] + (x.mean() - y.mean()) ** 2), abs=1e-12)


def test_va_excludes_invalid_frames() -> None:
    rng = np.random.default_rng(2)
    true = rng.uniform(-1, 1, (200, 2))
    pred = true + rng.normal(0, 0.3, true.shape)
    base = va_score(pred, true)
    true2, pred2 = np.vstack([true, [[-5, -5]] * 30]), np.vstack([pred, rng.uniform(-1, 1, (30, 2))])
    assert va_score(pred2, true2) == pytest.approx(base)
    assert base["ccc_valence"] == pytest.approx(ccc(pred[:, 0], true[:, 0]))
    assert base["p_va"] == pytest.approx((base["ccc_valence"] + base["ccc_arousal"]) / 2)
    mask = np.r_[np.ones(200, bool), np.zeros(30, bool)]
    assert va_score(pred2, np.vstack([true, np.zeros((30, 2))]), mask) == pytest.approx(base)


def test_expr_matches_sklearn_and_masks() -> None:
    rng = np.random.default_rng(3)
    true, pred = rng.integers(0, 8, 300), rng.integers(0, 8, 300)
    s = expr_score(pred, true)
    ref = f1_score(true, pred, labels=list(range(8)), average="macro", zero_division=0)
    assert s["f1_macro"] == pytest.approx(ref, abs=1e-6) and s["p_expr"] == s["f1_macro"]
    assert s["acc"] == pytest.approx((true == pred).mean())
    noisy = expr_score(np.r_[pred, rng.integers(0, 8, 50)], np.r_[true, -np.ones(50, int)])
    assert noisy == s
    keep = np.r_[np.ones(300), np.zeros(50)]
    masked = expr_score(np.r_[pred, np.zeros(50, int)], np.r_[true, np.ones(50, int)], mask=keep)
    assert masked == s


def test_absent_classes_score_zero() -> None:
    true = np.array([0, 0, 1, 1, 4])
    s = expr_score(true.copy(), true)
    assert s["f1_per_class"] == [1, 1, 0, 0, 1, 0, 0, 0] and s["f1_macro"] == pytest.approx(3 / 8)
    assert class_score(np.array([0, 1]), np.array([0, 1]), 6)["f1_macro"] == pytest.approx(2 / 6)
    lab = {"lsd": np.array([0, 1]), "mask_lsd": np.ones(2, bool)}
    assert score_task("lsd", {"lsd": np.array([0, 1])}, lab)["p_lsd"] == pytest.approx(2 / 6)


def test_expr_abaw12_edition() -> None:
    true = np.array([0, 1, 2, 3, 4, 5, 6, 7, 7])
    pred = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2])
    s = expr_score(pred, true, edition="abaw1-2")
    f1 = f1_score(true[:7], pred[:7], labels=list(range(7)), average="macro", zero_division=0)
    assert len(s["f1_per_class"]) == 7 and s["acc"] == pytest.approx(6 / 7)
    assert s["p_expr"] == pytest.approx(0.67 * f1 + 0.33 * 6 / 7)
    with pytest.raises(ValueError, match="valid editions"):
        expr_score(pred, true, edition="abaw9")


def test_au_matches_sklearn_per_au_and_masks() -> None:
    rng = np.random.default_rng(4)
    true, pred = rng.integers(0, 2, (400, 12)), rng.integers(0, 2, (400, 12))
    true[:, 3] = 0
    pred[:, 3] = 0
    s = au_score(pred, true)
    ref = [f1_score(true[:, j], pred[:, j], zero_division=0) for j in range(12)]
    assert np.allclose(s["f1_per_au"], ref, atol=1e-6) and s["f1_per_au"][3] == 0.0
    assert s["p_au"] == pytest.approx(np.mean(ref))
    t2 = true.copy()
    t2[:50] = -1
    ref2 = [f1_score(true[50:, j], pred[50:, j], zero_division=0) for j in range(12)]
    assert np.allclose(au_score(pred, t2)["f1_per_au"], ref2, atol=1e-6)
    old = au_score(pred, true, edition="abaw1-2")
    assert old["p_au"] == pytest.approx(0.5 * np.mean(ref) + 0.5 * (pred == true).mean())


def test_mtl_sums_tasks_each_on_its_own_frames() -> None:
    rng = np.random.default_rng(5)
    n = 120
    lab = {"va": rng.uniform(-1, 1, (n, 2)), "expr": rng.integers(0, 8, n), "au": rng.integers(0, 2, (n, 12))}
    pred = {"va": lab["va"] + rng.normal(0, 0.5, (n, 2)), "expr": rng.integers(0, 8, n),
            "au": rng.integers(0, 2, (n, 12))}
    lab["expr"][:40] = -1
    lab["va"][40:80] = -5
    s = score_task("mtl", pred, lab)
    parts = va_score(pred["va"], lab["va"])["p_va"] + expr_score(pred["expr"], lab["expr"])["p_expr"] + \
        au_score(pred["au"], lab["au"])["p_au"]
    assert s["p_mtl"] == pytest.approx(parts)
    full = np.arange(80, n)
    only_full = va_score(pred["va"][full], lab["va"][full])["p_va"] + expr_score(pred["expr"][full], lab["expr"][full])[
        "p_expr"] + au_score(pred["au"][full], lab["au"][full])["p_au"]
    assert s["p_mtl"] != pytest.approx(only_full)


def test_score_task_dispatch_on_dense_trainer_arrays() -> None:
    rng = np.random.default_rng(6)
    n = 60
    lab = {"expr": rng.integers(0, 8, n), "mask_expr": rng.random(n) > 0.3, "va": rng.uniform(-1, 1, (n, 2)),
           "mask_va": rng.random(n) > 0.3, "au": rng.integers(0, 2, (n, 12)), "mask_au": rng.random(n) > 0.3,
           "lsd": rng.integers(0, 6, n), "mask_lsd": np.ones(n, bool)}
    perfect = {k: lab[k] for k in ("expr", "va", "au", "lsd")}
    for task in TASKS.names():
        s = score_task(task, perfect, lab)
        assert s["main"] == pytest.approx(s[get_task(task).main_metric])
        json.dumps(s)
    assert score_task("mtl", perfect, lab)["main"] == pytest.approx(3.0)
    wrong = dict(perfect, expr=np.where(lab["mask_expr"], lab["expr"], (lab["expr"] + 1) % 8))
    assert score_task("expr", wrong, lab)["main"] == pytest.approx(1.0)
    with pytest.raises(UnknownNameError, match="valid task names: au, expr, lsd, mtl, va"):
        score_task("pose", perfect, lab)


def test_hard_predictions_follow_output_kinds() -> None:
    probs = {"va": np.array([[0.2, -0.4]], np.float64), "expr": np.eye(8)[[3]] * 0.9,
             "au": np.array([[0.2, 0.5, 0.9] + [0.0] * 9])}
    hard = hard_predictions("mtl", probs, threshold=0.5)
    assert hard["expr"].tolist() == [3] and hard["expr"].dtype == np.int64
    assert hard["au"][0, :3].tolist() == [0, 1, 1] and hard["va"].dtype == np.float32
    assert hard_predictions("mtl", probs, threshold=0.95)["au"][0, :3].tolist() == [0, 0, 0]
    lab = {"expr": np.array([3]), "va": np.array([[0.2, -0.4]]), "au": hard["au"]}
    assert score("mtl", probs, lab)["p_expr"] == pytest.approx(1 / 8)
