"""pc eval reporting: both normalisation conventions, and renders of the worst and best shapes with meshes."""

from __future__ import annotations

import numpy as np
import pytest

from affcli.pointcloud.evaluate import render_choice
from affcli.pointcloud.metrics import evaluate_clouds


def test_gt_frame_sees_what_own_normalisation_hides():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(2000, 3))
    gt /= np.linalg.norm(gt, axis=1, keepdims=True)
    same = evaluate_clouds(gt, gt, device="cpu")
    assert same["cd"] == pytest.approx(0, abs=1e-9) and same["cd_gt"] == pytest.approx(0, abs=1e-9)
    grown = evaluate_clouds(gt * 1.2 + 0.3, gt, device="cpu")  # right shape, wrong size and place
    assert grown["cd"] == pytest.approx(0, abs=1e-9) and grown["cd_gt"] > 0.05
    outliers = np.concatenate([gt, gt[:20] * 4.0])  # 1% stray points shrink the rest under own normalisation
    res = evaluate_clouds(outliers, gt, device="cpu")
    assert res["cd"] > 0.05 and res["cd_gt"] < res["cd"] and res["hd_gt"] > 8.0  # (4-1)^2 = 9 one way
    half = evaluate_clouds(outliers, gt, convention="half", device="cpu")
    assert half["cd_gt"] == pytest.approx(res["cd_gt"] / 2) and half["hd_gt"] == pytest.approx(res["hd_gt"] / 2)


def test_renders_pick_worst_and_best_shapes_with_meshes():
    rows = [{"shape": s, "cd": cd, "p2f_mean": p} for s, cd, p in
            [("a", 0.5, 1.0), ("b", 0.9, None), ("c", 0.1, 2.0), ("d", 0.3, 1.5), ("e", 0.05, None)]]
    rows.append({"shape": "mean", "cd": 0.4, "p2f_mean": 1.5})
    picks = render_choice(rows, None, 3)
    assert [(label, r["shape"]) for label, r in picks] == [("worst1", "a"), ("best1", "c"), ("worst2", "d")]
    no_mesh = [dict(r, p2f_mean=None) for r in rows]
    assert [r["shape"] for _, r in render_choice(no_mesh, None, 2)] == ["b", "e"]
    assert len(render_choice(rows, None, 10)) == 3
