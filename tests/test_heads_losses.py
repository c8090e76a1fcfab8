"""Losses: masked labels never change the loss, option parsing, CCC and soft-prompt definitions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from affcli.heads.losses import LOSSES, LossContext, build_loss, ccc_per_dim, soft_region_labels, va_centres

torch.set_num_threads(1)
B, W, H = 3, 10, 16


def _ctx(task="mtl"):
    g = torch.Generator().manual_seed(0)
    n = 200
    train = {"expr": torch.randint(0, 8, (n,), generator=g), "mask_expr": torch.rand(n, generator=g) > 0.2,
             "va": torch.rand(n, 2, generator=g) * 2 - 1, "mask_va": torch.rand(n, generator=g) > 0.2,
             "au": torch.randint(0, 2, (n, 12), generator=g), "mask_au": torch.rand(n, generator=g) > 0.2,
             "lsd": torch.randint(0, 6, (n,), generator=g), "mask_lsd": torch.ones(n, dtype=torch.bool)}
    text = {"expr8": torch.randn(8, 12, generator=g), "va9": torch.randn(27, 12, generator=g)}
    return LossContext(task, H, train, text, teacher=lambda run: {"expr": torch.softmax(torch.randn(100, 8, generator=g), -1),
                                                                  "va": torch.rand(100, 2, generator=g) * 2 - 1})


def _batch(seed=1, shape=(B, W)):
    g = torch.Generator().manual_seed(seed)
    out = {"expr": torch.randn(*shape, 8, generator=g, requires_grad=True),
           "va": torch.tanh(torch.randn(*shape, 2, generator=g)).requires_grad_(),
           "au": torch.randn(*shape, 12, generator=g, requires_grad=True),
           "feat": torch.randn(*shape, H, generator=g, requires_grad=True)}
    y = {"expr": torch.randint(0, 8, shape, generator=g), "mask_expr": torch.rand(shape, generator=g) > 0.4,
         "va": torch.rand(*shape, 2, generator=g) * 2 - 1, "mask_va": torch.rand(shape, generator=g) > 0.4,
         "au": torch.randint(0, 2, (*shape, 12), generator=g), "mask_au": torch.rand(shape, generator=g) > 0.4,
         "_idx": torch.randint(0, 100, shape, generator=g), "_real": torch.ones(shape, dtype=torch.bool)}
    return out, y


def _garble(y):
    z = dict(y)
    z["expr"] = torch.where(y["mask_expr"], y["expr"], -1)
    z["va"] = torch.where(y["mask_va"].unsqueeze(-1), y["va"], torch.tensor(float("nan")))
    z["au"] = torch.where(y["mask_au"].unsqueeze(-1), y["au"], 7)
    return z


LOSS_STRINGS = ["ce", "ce(weights=auto)", "ce(weights=[1,2,1,1,1,1,1,3])", "focal(gamma=2, alpha=auto)", "ccc", "mse",
                "bce", "bce(pos_weight=auto)", "ce+0.1*text-contrastive", "text-contrastive(symmetric=false)",
                "ccc+0.2*soft-prompt(sigma=0.45)", "distill(teacher='t')", "ce(weights=auto)+ccc+bce(pos_weight=auto)"]


@pytest.mark.parametrize("loss", LOSS_STRINGS)
@pytest.mark.parametrize("shape", [(B, W), (B,)])
def test_masked_labels_never_change_the_loss(loss, shape):
    torch.manual_seed(0)
    fn = build_loss(loss, _ctx())
    out, y = _batch(shape=shape)
    a, _ = fn(out, y)
    grads_a = torch.autograd.grad(a, [out["expr"], out["va"], out["au"], out["feat"]], allow_unused=True)
    b, _ = fn(out, _garble(y))
    grads_b = torch.autograd.grad(b, [out["expr"], out["va"], out["au"], out["feat"]], allow_unused=True)
    assert torch.isfinite(a) and a.item() == b.item()
    for ga, gb in zip(grads_a, grads_b):
        assert (ga is None and gb is None) or torch.equal(ga, gb)
    y2 = dict(y)
    y2["mask_expr"], y2["mask_va"], y2["mask_au"] = (torch.zeros_like(y["mask_expr"]), torch.zeros_like(y["mask_va"]),
                                                     torch.zeros_like(y["mask_au"]))
    c, _ = fn(out, y2)
    assert torch.isfinite(c)


def test_changing_a_labelled_frame_does_change_the_loss():
    fn = build_loss("ce+ccc+bce", _ctx())
    out, y = _batch()
    z = dict(y)
    i = torch.nonzero(y["mask_expr"])[0]
    z["expr"] = y["expr"].clone()
    z["expr"][tuple(i)] = (y["expr"][tuple(i)] + 1) % 8
    assert fn(out, y)[0].item() != fn(out, z)[0].item()


def test_ccc_matches_the_population_formula():
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) * 0.5 + 0.3
    t[:, 1] = x[:, 1] * 0.8 + 0.1
    ref = [2 * np.cov(x[:, i], t[:, i], bias=True)[0, 1] / (x[:, i].var() + t[:, i].var() + (x[:, i].mean() - t[:, i].mean()) ** 2)
           for i in range(2)]
    got = ccc_per_dim(torch.tensor(x), torch.tensor(t), torch.ones(500, 2, dtype=torch.bool))
    assert np.allclose(got.numpy(), ref, atol=1e-5)


def test_soft_labels_follow_the_distance_to_region_centres():
    c = va_centres()
    assert c.shape == (9, 2) and c[1].tolist() == pytest.approx([-0.66, 0.0]) and c[3].tolist() == pytest.approx([0.0, -0.66])
    s = soft_region_labels(torch.tensor([[0.66, 0.66], [0.0, 0.0]]), 0.45)
    assert torch.allclose(s.sum(-1), torch.ones(2)) and s[0].argmax() == 8 and s[1].argmax() == 4
    assert s[1, 1] == pytest.approx(s[1, 3].item()) and s[1, 0] < s[1, 1]


def test_loss_errors_are_clear():
    with pytest.raises(KeyError, match="valid loss names"):
        build_loss("cross-entropy", _ctx())
    with pytest.raises(ValueError, match="takes no option 'gama'"):
        build_loss("focal(gama=2)", _ctx())
    with pytest.raises(ValueError, match="task expr has no reg output"):
        build_loss("ccc", _ctx("expr"))
    ctx = _ctx()
    ctx.text = {}
    with pytest.raises(ValueError, match="no CLIP text embeddings for prompt set 'expr8'"):
        build_loss("ce+0.1*text-contrastive", ctx)
    assert {"ce", "focal", "ccc", "mse", "bce", "text-contrastive", "soft-prompt", "distill"} <= set(LOSSES.names())


def test_auto_class_weights_are_inverse_frequency():
    ctx = _ctx("expr")
    ctx.train_labels = {"expr": torch.tensor([0] * 90 + [1] * 10), "mask_expr": torch.ones(100, dtype=torch.bool)}
    w = build_loss("ce(weights=auto)", ctx).terms[0].w
    assert w[1] / w[0] == pytest.approx(9.0)
