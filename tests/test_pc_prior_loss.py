"""The `phong` prior, bounded offsets and prior features of PU-MFA, the soft Hausdorff loss, the held-out validation
split of training, and make-data's exclusion of shapes near test clouds."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affcli.cli import app
from affcli.pointcloud.data import make_pugan_h5
from affcli.pointcloud.errors import PointCloudError
from affcli.pointcloud.io import write_cloud, write_mesh
from affcli.pointcloud.losses import soft_hausdorff, upsampling_loss
from affcli.pointcloud.metrics import chamfer, hausdorff
from affcli.pointcloud.models import create_model
from affcli.pointcloud.models.prior import midpoint_prior, prior_points
from affcli.pointcloud.ops import knn
from affcli.pointcloud.sampling import poisson_disk_sample

torch.set_num_threads(1)
TINY = {"dim": 16, "growth": 8, "dense_layers": 2, "scales": [8, 16], "levels": 1, "heads": 2, "code_dim": 8}


def sphere(n: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float32) + 0.5
    phi, th = torch.acos(1 - 2 * i / n), math.pi * (1 + 5**0.5) * i
    return torch.stack([th.cos() * phi.sin(), th.sin() * phi.sin(), phi.cos()], 1)


def test_phong_midpoints_lie_on_the_sphere_where_chords_sag():
    x = sphere(300)[None]
    plain, phong = midpoint_prior(x, 4), prior_points(x, 4, "phong")
    assert phong.shape == (1, 300, 4, 3) and torch.equal(phong[:, :, 0], x)
    sag = lambda p: (p[0, :, 1:].norm(dim=-1) - 1).abs().mean()  # noqa: E731
    assert sag(plain) > 1e-3
    assert sag(phong) < 0.2 * sag(plain)


def test_phong_passes_over_chords_that_leave_the_surface_steeply():
    """Two parallel sheets closer than their own spacing: plain midpoints join each point to its twin on the other
    sheet (a chord along the normal); phong passes over those chords while other neighbours are left."""
    g = torch.stack(torch.meshgrid(torch.linspace(0, 1, 12), torch.linspace(0, 1, 12), indexing="ij"), -1).reshape(-1, 2)
    x = torch.cat([torch.cat([g, torch.zeros(144, 1)], 1), torch.cat([g, torch.full((144, 1), 0.05)], 1)])[None]

    def twin_midpoints(p: torch.Tensor) -> int:
        mid = p[(p[..., 2] > 0.01) & (p[..., 2] < 0.04)]
        return int(((mid[:, :2] * 11 - (mid[:, :2] * 11).round()).abs() < 1e-4).all(-1).sum())

    assert twin_midpoints(midpoint_prior(x, 4)) == 144
    assert twin_midpoints(prior_points(x, 4, "phong")) < 144 * 0.15


def test_untrained_model_with_prior_features_is_the_prior_and_offsets_stay_bounded():
    x = sphere(128)[None]
    model = create_model("pu-mfa", 4, prior="phong", prior_features=True, offset_bound=0.5, **TINY).eval()
    prior = prior_points(x, 4, "phong").reshape(1, -1, 3)
    with torch.no_grad():
        assert torch.equal(model(x), prior)
        torch.nn.init.constant_(model.head[-1].bias, 50.0)
        moved = (model(x) - prior).abs().reshape(1, 128, 4, 3)
    spacing = knn(x, x, 2)[0][..., 1].sqrt()
    assert moved.max() > 0.4 * spacing.min()
    assert (moved <= 0.5 * spacing[..., None, None] + 1e-6).all()
    with pytest.raises(PointCloudError, match="prior_features needs a prior"):
        create_model("pu-mfa", 4, prior_features=True)


def test_soft_hausdorff_is_hausdorff_at_one_point_and_punishes_a_stray_point():
    torch.manual_seed(0)
    gt = torch.rand(2, 200, 3)
    pred = gt + 0.01 * torch.randn(2, 200, 3)
    assert torch.allclose(soft_hausdorff(pred, gt, worst=1 / 200), hausdorff(pred, gt, "pugcn"))
    stray = pred.clone()
    stray[:, 0] += 0.5
    cd_up = chamfer(stray, gt) / chamfer(pred, gt)
    hd_up = soft_hausdorff(stray, gt) / soft_hausdorff(pred, gt)
    assert hd_up > 3 * cd_up
    stray.requires_grad_(True)
    out = upsampling_loss(stray, gt, hausdorff=1.0)
    out["loss"].backward()
    assert set(out) == {"cd", "hausdorff", "loss"} and stray.grad[:, 0].abs().sum() > 0
    assert torch.allclose(out["loss"], out["cd"] + out["hausdorff"])


def _sphere_h5(path, shapes: int, with_index: bool = True):
    """shapes x 2 patches (FPS input 64 of 256 sphere points), mesh_index 0..shapes-1 when asked."""
    dense = sphere(4096)
    inp, gt = [], []
    for s in range(2 * shapes):
        centre = dense[(s * 331) % 4096]
        patch = dense[(dense - centre).norm(dim=1).argsort()[:256]]
        gt.append(patch.numpy())
        inp.append(patch[::4].numpy())
    with h5py.File(path, "w") as fh:
        fh["poisson_64"], fh["poisson_256"] = np.stack(inp), np.stack(gt)
        if with_index:
            fh["mesh_index"] = np.repeat(np.arange(shapes, dtype=np.int32), 2)
    return path


def test_training_holds_out_whole_shapes_and_logs_validation_chamfer(tmp_path):
    data = _sphere_h5(tmp_path / "d.h5", 6)
    run = tmp_path / "run"
    base = ["pc", "train", "--data", str(data), "--input-key", "poisson_64", "--gt-key", "poisson_256",
            "--batch-size", "4", "--lr", "3e-3", "--device", "cpu", "--epochs", "2", "--val-every", "3",
            "--hausdorff", "1.0", "--jitter", "0", "--opt", "prior=phong", "--opt", "prior_features=true",
            *[f"--opt={k}={json.dumps(v)}" for k, v in TINY.items()]]
    r = CliRunner().invoke(app, [*base, "--out", str(run)])
    assert r.exit_code == 0, r.output
    cfg, m = json.loads((run / "config.json").read_text()), json.loads((run / "metrics.json").read_text())
    assert cfg["n_patches"] == 8 and cfg["n_val_patches"] == 4  # shapes 0 and 3 held out, 2 patches each
    assert cfg["jitter"] == 0 and cfg["identity"]["jitter"] == 0 and cfg["identity"]["val_every"] == 3
    assert len(m["val_cd"]) == 2 and m["epochs"][0]["epoch"] == 1 and all(v > 0 for v in m["val_cd"])
    assert m["val_cd_initial"] > 0 and all(k in m["epochs"][0] for k in ("loss", "cd", "hausdorff"))
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "steps"), "--epochs", "5", "--max-steps", "3"])
    steps = json.loads((tmp_path / "steps" / "metrics.json").read_text())
    assert r.exit_code == 0 and steps["steps_done"] == 3 and steps["stopped"] == "step budget"
    bare = _sphere_h5(tmp_path / "bare.h5", 6, with_index=False)
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "r2"), "--data", str(bare)])
    assert r.exit_code == 2 and "no mesh_index dataset" in r.output


def test_make_data_leaves_out_a_shape_near_a_test_cloud(tmp_path):
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    meshes = tmp_path / "meshes"
    write_mesh(meshes / "cube.off", v, f)
    write_mesh(meshes / "slab.off", v * [3, 1, 0.2], f)
    test = tmp_path / "test"
    write_cloud(test / "testslab.xyz", poisson_disk_sample(v * [6, 2, 0.4] + 5, f, 2048, seed=3))
    out = make_pugan_h5(meshes, tmp_path / "t.h5", 2, 128, 32, exclude_near=test)
    with h5py.File(out) as fh:
        assert list(fh.attrs["meshes"]) == ["cube"] and list(fh.attrs["excluded"]) == ["slab~testslab"]
        assert fh["poisson_128"].shape[0] == 2 and set(fh["mesh_index"][...]) == {0}
    with pytest.raises(PointCloudError, match="no clouds"):
        make_pugan_h5(meshes, tmp_path / "u.h5", 2, 128, 32, exclude_near=tmp_path / "nothing")
