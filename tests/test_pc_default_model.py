"""The midpoint prior of PU-MFA (an untrained model is the prior) and the shipped default x4 model (offline, beats
the midpoint baseline on a shared PU-GAN test cloud)."""

from __future__ import annotations

import numpy as np
import torch

from affcli.pointcloud.baselines import midpoint_upsample
from affcli.pointcloud.io import read_cloud, write_cloud
from affcli.pointcloud.metrics import chamfer, evaluate_clouds
from affcli.pointcloud.models import create_model
from affcli.pointcloud.models.prior import midpoint_prior
from affcli.pointcloud.ops import knn
from affcli.pointcloud.upsample import DEFAULT_MODEL, load_upsampler, upsample_cloud

SHAPE = "chair"


def _cloud(n: int = 200) -> torch.Tensor:
    """Two evenly spread clouds [2,n,3]: a Fibonacci sphere and the same squashed into an ellipsoid."""
    i = torch.arange(n, dtype=torch.float32) + 0.5
    z = 1 - 2 * i / n
    phi = i * torch.pi * (3 - 5**0.5)
    s = (1 - z * z).sqrt()
    p = torch.stack([s * phi.cos(), s * phi.sin(), z], -1)
    return torch.stack([p, p * torch.tensor([1.0, 0.7, 0.5])])


def test_untrained_prior_model_is_the_prior():
    x = _cloud()
    model = create_model("pu-mfa", 4, prior="midpoint").eval()
    with torch.no_grad():
        out = model(x)
    prior = midpoint_prior(x, 4)
    assert out.shape == (2, 800, 3)
    assert torch.equal(out, prior.reshape(2, 800, 3))


def test_prior_points_are_the_baselines_candidates():
    """Every prior point is the parent or the midpoint of a kNN pair (k = 2r) of the parent: the midpoint baseline's
    candidate set, laid out r per parent; few duplicates."""
    x = _cloud(300)
    prior = midpoint_prior(x, 4)
    assert torch.equal(prior[:, :, 0], x)
    idx = knn(x, x, 9)[1][..., 1:]
    cands = (x.unsqueeze(2) + x[torch.arange(2)[:, None, None], idx]) / 2  # [B,N,8,3]
    cands = torch.cat([x.unsqueeze(2), cands], 2)
    d = (prior[:, :, 1:, None] - cands[:, :, None]).norm(dim=-1).amin(-1)
    assert d.max() < 1e-6
    flat = prior.reshape(2, -1, 3)
    assert all(len(torch.unique(f.round(decimals=6), dim=0)) > 0.95 * f.shape[0] for f in flat)


def test_prior_keeps_the_point_for_a_neighbour_across_a_gap():
    """A point whose near neighbours lie far beyond the cloud's spacing gets no midpoint in the empty space."""
    grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, 12), torch.linspace(0, 1, 12), indexing="ij"), -1)
    sheet = torch.cat([grid.reshape(-1, 2), torch.zeros(144, 1)], 1)
    x = torch.cat([sheet, torch.tensor([[0.5, 0.5, 3.0]])])[None]
    prior = midpoint_prior(x, 4)
    assert torch.equal(prior[0, -1], x[0, -1].expand(4, 3))
    assert prior[0, :-1, :, 2].abs().max() == 0


def test_zero_initialised_head_gets_gradient_and_moves():
    torch.manual_seed(0)
    x = _cloud(128)
    model = create_model("pu-mfa", 4, prior="midpoint", dim=32, growth=8, scales=(8, 16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = x.repeat_interleave(4, 1) * 1.05
    before = chamfer(model(x), target).item()
    for _ in range(10):
        opt.zero_grad()
        chamfer(model(x), target).backward()
        opt.step()
    assert model.head[-1].weight.abs().max() > 0
    assert chamfer(model(x), target).item() < 0.95 * before


def _scores(shared_pc) -> dict[str, dict]:
    """evaluate_clouds of the shipped model and the midpoint baseline on one shared PU-GAN test cloud (x4)."""
    torch.set_num_threads(1)
    model = load_upsampler(None, "cpu")
    x = read_cloud(shared_pc / "pugan_test" / "input_2048" / f"{SHAPE}.xyz")
    gt = read_cloud(shared_pc / "pugan_test" / "gt_8192" / f"{SHAPE}.xyz")
    preds = {"ours": upsample_cloud(model, x, 4), "midpoint": midpoint_upsample(x, 4).numpy()}
    assert all(p.shape == (8192, 3) for p in preds.values())
    return {k: evaluate_clouds(p, gt, None, "pugcn", torch.device("cpu")) for k, p in preds.items()}


def test_shipped_model_beats_midpoint_on_a_shared_test_cloud(shared_pc):
    """PU-GCN convention (each cloud normalised by its own centroid and radius, the field's comparison standard)."""
    assert DEFAULT_MODEL.is_file() and DEFAULT_MODEL.stat().st_size < 8 * 2**20
    model = load_upsampler(None, "cpu")
    assert model.ratio == 4 and model.cfg.prior == "phong" and model.cfg.self_attention
    s = _scores(shared_pc)
    assert s["ours"]["cd"] < 0.95 * s["midpoint"]["cd"]


def test_shipped_model_beats_midpoint_in_the_gt_frame(shared_pc):
    """Both clouds normalised by the ground truth's centroid and radius: stray points cannot shrink a prediction."""
    s = _scores(shared_pc)
    assert s["ours"]["cd_gt"] < s["midpoint"]["cd_gt"]


def test_cli_uses_the_shipped_model_without_run(shared_pc, tmp_path):
    """`pc upsample cloud.xyz` and `pc eval` without --run use the shipped model; its training record passes the
    leak check against a real test shape."""
    import json

    from typer.testing import CliRunner

    from affcli.cli import app

    src = shared_pc / "pugan_test"
    cloud = tmp_path / f"{SHAPE}.xyz"
    cloud.symlink_to(src / "input_2048" / f"{SHAPE}.xyz")
    runner = CliRunner()
    r = runner.invoke(app, ["pc", "upsample", str(cloud), "--device", "cpu", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert read_cloud(tmp_path / f"{SHAPE}_x4.xyz").shape == (8192, 3)
    test = tmp_path / "test"
    for sub, ext in (("input_2048", "xyz"), ("gt_8192", "xyz"), ("meshes", "off")):
        (test / sub).mkdir(parents=True)
        (test / sub / f"{SHAPE}.{ext}").symlink_to(src / sub / f"{SHAPE}.{ext}")
    out = tmp_path / "ev"
    r = runner.invoke(app, ["pc", "eval", "--test-dir", str(test), "--device", "cpu", "--renders", "0",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "no train/test overlap" in r.output
    res = json.loads((out / "results.json").read_text())
    assert res["leak"]["checked"] and res["leak"]["train_shapes"] >= 14
    assert set(res["methods"]) == {"model", "midpoint"}


def test_noise_weights_are_shipped_selectable_and_leak_checked(shared_pc, tmp_path):
    """`--weights noise` loads the jitter-trained shipped model without hole filling (its candidates would come from
    the noisy input), which upsamples a noisy scan closer to the clean surface than the default does; `pc eval`
    checks its own training record; `--fill` still turns filling on; it cannot be combined with --run, and an
    unknown name is refused."""
    import json

    import pytest
    from typer.testing import CliRunner

    from affcli.cli import app
    from affcli.pointcloud.errors import PointCloudError
    from affcli.pointcloud.noise import add_noise
    from affcli.pointcloud.upsample import NOISE_MODEL, model_choice

    assert NOISE_MODEL.is_file() and NOISE_MODEL.stat().st_size < 8 * 2**20
    assert json.loads((NOISE_MODEL.parent / "config.json").read_text())["train"]["jitter"] > 0
    noisy, clean = load_upsampler(model_choice(None, "noise")[0]), load_upsampler(None)
    src = shared_pc / "pugan_test"
    x = add_noise(read_cloud(src / "input_2048" / f"{SHAPE}.xyz"), 0.01, SHAPE)
    cloud = tmp_path / f"{SHAPE}.xyz"
    write_cloud(cloud, x)
    x = read_cloud(cloud)  # what the command reads (text, 6 decimals)
    runner = CliRunner()
    r = runner.invoke(app, ["pc", "upsample", str(cloud), "--weights", "noise", "--device", "cpu", "--threads", "1"])
    assert r.exit_code == 0, r.output
    out = read_cloud(tmp_path / f"{SHAPE}_x4.xyz")
    assert np.allclose(out, upsample_cloud(noisy, x, 4, fill=False), atol=1e-5)
    gt = read_cloud(src / "gt_8192" / f"{SHAPE}.xyz")
    cd = {k: evaluate_clouds(p, gt, None, "pugcn", torch.device("cpu"))["cd"]
          for k, p in (("noise", out), ("clean", upsample_cloud(clean, x, 4)))}
    assert cd["noise"] < 0.95 * cd["clean"]
    test = tmp_path / "test"
    for sub, ext in (("input_2048", "xyz"), ("gt_8192", "xyz")):
        (test / sub).mkdir(parents=True)
        (test / sub / f"{SHAPE}.{ext}").symlink_to(src / sub / f"{SHAPE}.{ext}")
    r = runner.invoke(app, ["pc", "eval", "--test-dir", str(test), "--weights", "noise", "--device", "cpu",
                            "--renders", "0", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["run"] == str(NOISE_MODEL) and res["leak"]["checked"] and res["leak"]["train_shapes"] >= 14
    assert res["fill"] is False
    assert model_choice(None, "noise", True) == (NOISE_MODEL, True) and model_choice(None)[1] is True
    r = runner.invoke(app, ["pc", "upsample", str(cloud), "--weights", "noise", "--run", str(NOISE_MODEL)])
    assert r.exit_code == 2 and "not both" in r.output
    with pytest.raises(PointCloudError, match="one of clean, noise"):
        model_choice(None, "fancy")
