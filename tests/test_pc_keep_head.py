"""The keep head: its labels mark the outputs off the ground-truth surface, training teaches it to find them, and
the merge drops the candidates it doubts (never below the count it must return)."""

from __future__ import annotations

import pytest
import torch

from affcli.pointcloud.losses import upsampling_loss
from affcli.pointcloud.merge import blocked_fps_merge
from affcli.pointcloud.models import create_model
from affcli.pointcloud.upsample import trusted, upsample_cloud

TINY = {"dim": 16, "growth": 8, "dense_layers": 2, "scales": [8, 16], "levels": 1, "heads": 2, "code_dim": 8,
        "prior": "delaunay", "prior_features": True, "offset_bound": 1.0, "pin_input": True, "keep_score": True}


def sphere(n: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


def test_keep_labels_mark_the_strays():
    gt = sphere(2000)[None]
    pred = gt[:, :400].clone()
    pred[:, :20] *= 1.1  # 20 outputs 0.1 off the surface; spacing 0.1: strays beyond KEEP_RADIUS x spacing
    spacing = torch.full((1, 400), 0.1)
    logits = torch.zeros(1, 400, requires_grad=True)
    out = upsampling_loss(pred, gt, keep=(logits, spacing))
    out["keep"].backward()
    assert bool((logits.grad[0, :20] > 0).all()) and bool((logits.grad[0, 20:] < 0).all())  # push strays down
    assert float(out["keep_acc"]) == pytest.approx(0.05)  # logit 0 doubts every output: right for the 20 strays only
    out = upsampling_loss(pred, gt, keep=(torch.cat([torch.full((1, 20), -5.0), torch.full((1, 380), 5.0)], 1), spacing))
    assert float(out["keep_acc"]) == 1.0 and float(out["keep"]) < 0.01


def test_model_scores_follow_its_outputs():
    torch.manual_seed(0)
    model = create_model("pu-mfa", 4, **TINY).eval()
    with torch.no_grad():
        out = model(sphere(64)[None])
    assert model.last_scores.shape == (1, 256) and out.shape == (1, 256, 3)
    assert model.last_spacing.shape == (1, 256) and bool((model.last_spacing > 0).all())
    assert bool((model.last_scores > 0).all())  # untrained: trusts every output


def test_untrained_keep_head_trusts_everything_and_merge_never_runs_short():
    torch.manual_seed(0)
    model = create_model("pu-mfa", 4, **TINY).eval()
    assert upsample_cloud(model, sphere(300), 4, batch=8).shape == (1200, 3)
    cand, logits = sphere(1000, 2), torch.linspace(-1, 1, 1000)
    assert len(trusted(cand, logits, 300)) == 500  # the doubted half dropped
    kept = trusted(cand, logits, 800)  # too few trusted: the 800 most trusted
    assert len(kept) == 800 and torch.equal(kept, cand[200:])
    assert blocked_fps_merge(sphere(200, 3), trusted(cand, logits, 800), 4).shape == (800, 3)
