"""PU-MFA's multi-head self-attention option: equivariant to point order, in the spec, trainable."""

from __future__ import annotations

import torch

from affcli.pointcloud.losses import upsampling_loss
from affcli.pointcloud.models import create_model, model_from_spec, model_spec
from affcli.pointcloud.models.layers import SelfAttention

torch.set_num_threads(1)


def test_self_attention_is_permutation_equivariant():
    torch.manual_seed(0)
    block = SelfAttention(32, 4).eval()
    xyz, feat = torch.randn(2, 50, 3), torch.randn(2, 50, 32)
    perm = torch.randperm(50)
    with torch.no_grad():
        out, out_p = block(xyz, feat), block(xyz[:, perm], feat[:, perm])
    torch.testing.assert_close(out[:, perm], out_p, atol=1e-5, rtol=1e-5)
    assert block.last_weights.shape == (2, 50, 50)
    torch.testing.assert_close(block.last_weights.sum(-1), torch.ones(2, 50))


def test_pu_mfa_with_self_attention_round_trips_and_learns():
    torch.manual_seed(0)
    opts = dict(dim=32, growth=16, dense_layers=2, scales=(8, 16), code_dim=8, self_attention=True)
    model = create_model("pu-mfa", 4, **opts)
    assert model.self_attn is not None and model_spec(model)["config"]["self_attention"] is True
    assert model_from_spec(model_spec(model)).self_attn is not None
    assert create_model("pu-mfa", 4, **{**opts, "self_attention": False}).self_attn is None
    gt = torch.randn(4, 256, 3)
    gt = gt / gt.norm(dim=-1, keepdim=True)
    inp = gt[:, ::4]
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(30):
        loss = upsampling_loss(model(inp), gt)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_spec_written_before_self_attention_existed_loads_without_it():
    """Self-attention is on by default now; a stored spec without the key was built without it."""
    opts = dict(dim=32, growth=16, dense_layers=2, scales=(8, 16), code_dim=8)
    assert create_model("pu-mfa", 4, **opts).self_attn is not None
    old = model_spec(create_model("pu-mfa", 4, **opts, self_attention=False))
    del old["config"]["self_attention"]
    rebuilt = model_from_spec(old)
    assert rebuilt.self_attn is None
    assert set(rebuilt.state_dict()) == set(create_model("pu-mfa", 4, **opts, self_attention=False).state_dict())
