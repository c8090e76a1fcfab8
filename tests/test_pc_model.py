"""PU-MFA / PU-Net networks, training (CLI, resume), whole-cloud upsampling, midpoint baseline, evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affcli.cli import app
from affcli.pointcloud.baselines import midpoint_upsample
from affcli.pointcloud.errors import PointCloudError
from affcli.pointcloud.io import write_cloud
from affcli.pointcloud.losses import upsampling_loss
from affcli.pointcloud.metrics import chamfer
from affcli.pointcloud.models import MODELS, create_model
from affcli.pointcloud.ops import farthest_point_sample, gather_points, knn, normalize_unit_sphere
from affcli.pointcloud.upsample import upsample_cloud

torch.set_num_threads(1)
TINY = {"dim": 32, "growth": 16, "dense_layers": 2, "scales": [8, 16], "levels": 1, "heads": 2, "code_dim": 8}
TINY_OPTS = [f"--opt={k}={json.dumps(v)}" for k, v in {**TINY, "dim": 16, "growth": 8}.items()]


def fibonacci_sphere(n: int) -> torch.Tensor:
    """n nearly evenly spaced points on the unit sphere [n,3]."""
    i = torch.arange(n) + 0.5
    phi, th = torch.acos(1 - 2 * i / n), math.pi * (1 + 5**0.5) * i
    return torch.stack([torch.cos(th) * torch.sin(phi), torch.sin(th) * torch.sin(phi), torch.cos(phi)], 1)


def sphere_patches(p: int, n_gt: int = 1024, n_in: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """p kNN patches of a dense sphere: inputs [p,n_in,3] (FPS of the gt) and gts [p,n_gt,3], input-normalised."""
    dense = fibonacci_sphere(8 * n_gt)[None]
    seeds = gather_points(dense, farthest_point_sample(dense, p))
    gt = gather_points(dense, knn(seeds, dense, n_gt)[1])[0]
    inp = gather_points(gt, farthest_point_sample(gt, n_in))
    inp, c, r = normalize_unit_sphere(inp)
    return inp, (gt - c) / r


@pytest.fixture(scope="module")
def patches_h5(tmp_path_factory) -> Path:
    inp, gt = sphere_patches(6)
    path = tmp_path_factory.mktemp("pc_model") / "sphere.h5"
    with h5py.File(path, "w") as fh:
        fh["poisson_256"], fh["poisson_1024"] = inp.numpy(), gt.numpy()
    return path


def test_registry_and_shapes():
    assert {"pu-mfa", "pu-net"} <= set(MODELS.names())
    x = torch.randn(2, 64, 3)
    for name, opts in (("pu-mfa", TINY), ("pu-net", {"dim": 16, "levels": 2, "branch_dims": [32, 16]})):
        assert create_model(name, 4, **opts)(x).shape == (2, 256, 3)
    with pytest.raises(PointCloudError, match="unknown option"):
        create_model("pu-mfa", 4, bogus=1)


@pytest.fixture(scope="module")
def trained_tiny() -> tuple[torch.nn.Module, float, float, float]:
    """A tiny PU-MFA fitted for 100 steps on sphere patches: (model in eval mode, start cd, end cd, input cd)."""
    torch.manual_seed(0)
    inp, gt = sphere_patches(4)
    model = create_model("pu-mfa", 4, **TINY)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        start = float(chamfer(model(inp), gt))
    for _ in range(100):
        loss = upsampling_loss(model(inp), gt)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = float(chamfer(model(inp), gt))
    return model.eval(), start, end, float(chamfer(inp, gt))


def test_tiny_pu_mfa_overfits_sphere_patches(trained_tiny):
    _, start, end, input_cd = trained_tiny
    assert end < start / 10
    assert end < input_cd


@pytest.mark.parametrize("merge", ["fps", "assign", "blocked", "inner"])
def test_upsampled_points_lie_near_the_input_surface(trained_tiny, merge):
    model, centre, radius = trained_tiny[0], torch.tensor([1.0, -2.0, 0.5]), 3.0
    xyz = fibonacci_sphere(512) * radius + centre
    up = torch.as_tensor(upsample_cloud(model, xyz, 4, batch=8, merge=merge))
    off_surface = ((up - centre).norm(dim=1) / radius - 1).abs()
    assert up.shape == (4 * 512, 3)
    assert float(off_surface.mean()) < 0.035 and float(off_surface.quantile(0.95)) < 0.08
    spacing = knn(xyz[None], xyz[None], 2)[0][0, :, 1].sqrt().mean()
    nearest_out = knn(xyz[None], up[None], 1)[0][0, :, 0].sqrt()
    assert float(nearest_out.max()) < 1.5 * float(spacing)


@pytest.mark.parametrize("ratio,merge", [(4, "fps"), (4, "assign"), (4, "blocked"), (4, "inner"), (16, "auto")])
def test_upsample_exact_count(ratio, merge):
    torch.manual_seed(0)
    model = create_model("pu-mfa", 4, **TINY).eval()
    xyz = fibonacci_sphere(512) * 3 + 1
    up = upsample_cloud(model, xyz, ratio, batch=8, merge=merge)
    assert up.shape == (ratio * 512, 3) and np.isfinite(up).all()


def test_upsample_refuses_bad_input():
    model = create_model("pu-mfa", 4, **TINY).eval()
    with pytest.raises(PointCloudError, match="ratio 0.5 out of range"):
        upsample_cloud(model, fibonacci_sphere(64), 0.5)
    with pytest.raises(PointCloudError, match="empty"):
        upsample_cloud(model, np.zeros((0, 3), np.float32), 4)
    bad = fibonacci_sphere(64)
    bad[3, 1] = float("nan")
    with pytest.raises(PointCloudError, match="NaN"):
        upsample_cloud(model, bad, 4)


def test_midpoint_baseline_on_sphere():
    xyz = fibonacci_sphere(512)
    gt = fibonacci_sphere(8192)
    for ratio in (4, 16):
        up = midpoint_upsample(xyz, ratio)
        assert up.shape == (ratio * 512, 3)
        assert float((up.norm(dim=1) - 1).abs().mean()) < 0.01
    up = midpoint_upsample(xyz, 4)
    assert float(chamfer(up[None], gt[None])) < float(chamfer(xyz[None], gt[None]))


def test_train_cli_resume_and_errors(tmp_path, patches_h5):
    runner = CliRunner()
    run = tmp_path / "run"
    base = ["pc", "train", "--data", str(patches_h5), "--out", str(run), "--batch-size", "3", "--lr", "3e-3",
            "--device", "cpu", *TINY_OPTS]
    r = runner.invoke(app, [*base, "--epochs", "1"])
    assert r.exit_code == 0, r.output
    for f in ("model.safetensors", "optimizer.safetensors", "config.json", "metrics.json"):
        assert (run / f).is_file()
    first = json.loads((run / "metrics.json").read_text())
    assert first["epochs_done"] == 1 and first["steps_done"] == 2
    r = runner.invoke(app, [*base, "--epochs", "2"])
    assert r.exit_code == 0, r.output
    second = json.loads((run / "metrics.json").read_text())
    assert second["epochs_done"] == 2 and second["steps_done"] == 4
    assert second["epochs"][0] == first["epochs"][0]
    r = runner.invoke(app, [*base[:5], str(tmp_path / "r16"), *base[6:], "--ratio", "16"])
    assert r.exit_code == 2 and "cannot train ratio 16" in r.output

    cloud = tmp_path / "cloud.xyz"
    write_cloud(cloud, fibonacci_sphere(300).numpy())
    up = tmp_path / "up.xyz"
    r = runner.invoke(app, ["pc", "upsample", "--run", str(run), "--input", str(cloud), "--ratio", "4",
                            "--out", str(up), "--device", "cpu", "--render"])
    assert r.exit_code == 0, r.output
    assert len(up.read_text().splitlines()) == 1200 and up.with_suffix(".png").is_file()
    r = runner.invoke(app, ["pc", "upsample", "--run", str(run), "--input", str(cloud), "--ratio", "1",
                            "--out", str(up), "--device", "cpu"])
    assert r.exit_code == 2 and "ratio '1' out of range" in r.output
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    r = runner.invoke(app, ["pc", "upsample", "--run", str(run), "--input", str(empty), "--out", str(up)])
    assert r.exit_code == 2 and "empty" in r.output
    (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes()[:200])
    cmd = ["pc", "upsample", "--run", str(run), "--input", str(cloud), "--out", str(up), "--device", "cpu"]
    r = runner.invoke(app, cmd)
    assert r.exit_code == 2 and "model.safetensors: changed after the run was written" in r.output, r.output
    (run / "checksums.json").unlink()  # a run from before checksums.json: the damage is still caught on read
    r = runner.invoke(app, cmd)
    assert r.exit_code == 2 and "model.safetensors: unreadable checkpoint" in r.output, r.output


def test_train_refuses_nan_patches(tmp_path):
    inp, gt = sphere_patches(2)
    inp[0, 5, 0] = float("nan")
    path = tmp_path / "nan.h5"
    with h5py.File(path, "w") as fh:
        fh["poisson_256"], fh["poisson_1024"] = inp.numpy(), gt.numpy()
    r = CliRunner().invoke(app, ["pc", "train", "--data", str(path), "--out", str(tmp_path / "run"), "--epochs", "1",
                                 "--device", "cpu", *TINY_OPTS])
    assert r.exit_code == 2 and "NaN" in r.output


def test_eval_cli_tables_and_files(tmp_path, patches_h5):
    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(app, ["pc", "train", "--data", str(patches_h5), "--out", str(run), "--epochs", "1",
                            "--max-patches", "2", "--inputs", "fps", "--device", "cpu", *TINY_OPTS])
    assert r.exit_code == 0, r.output
    test = tmp_path / "test"
    for k, rot in enumerate((0.0, 0.7)):
        c, s = math.cos(rot), math.sin(rot)
        rz = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        write_cloud(test / "input_256" / f"s{k}.xyz", (fibonacci_sphere(256) @ rz.T).numpy())
        write_cloud(test / "gt_1024" / f"s{k}.xyz", fibonacci_sphere(1024).numpy())
    r = runner.invoke(app, ["pc", "eval", "--run", str(run), "--test-dir", str(test), "--device", "cpu",
                            "--renders", "1"])
    assert r.exit_code == 0, r.output
    out = run / "eval_x4_pugcn"
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"model", "midpoint"}
    assert [row["shape"] for row in res["methods"]["midpoint"]["rows"]] == ["s0", "s1", "mean"]
    worst = max(res["methods"]["model"]["rows"][:-1], key=lambda row: row["cd"])["shape"]
    assert (out / "results.csv").is_file() and (out / "renders" / f"worst1_{worst}.png").is_file()
    assert "midpoint" in r.output
    pred = out / "midpoint" / "s0.xyz"
    r = runner.invoke(app, ["pc", "metrics", "--pred", str(pred), "--gt", str(test / "gt_1024" / "s0.xyz"),
                            "--device", "cpu"])
    assert r.exit_code == 0 and "cd=" in r.output
