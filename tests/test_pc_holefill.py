"""Hole filling after the merge (pointcloud/holefill.py): Delaunay candidates reach into a gap of the input, strays
off the surface leave the pool, the pass still returns exactly r N points, and `--no-fill` turns it off."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import affcli.pointcloud.holefill as hf
from affcli.cli import app
from affcli.pointcloud.checkpoint import save_model
from affcli.pointcloud.chunked import upsample_large
from affcli.pointcloud.io import read_cloud, write_cloud
from affcli.pointcloud.models import create_model
from affcli.pointcloud.models.prior import delaunay_prior, local_delaunay
from affcli.pointcloud.options import FILL_HELP
from affcli.pointcloud.ops import knn
from affcli.pointcloud.upsample import upsample_cloud

TINY = {"dim": 16, "growth": 8, "dense_layers": 2, "scales": [8, 16], "levels": 1, "heads": 2, "code_dim": 8,
        "prior": "phong", "prior_features": True, "offset_bound": 1.0}
runner = CliRunner()


def holed_grid() -> torch.Tensor:
    """A 21 x 21 grid (spacing 0.1) on z = 0 without the five points nearest the origin: a hole of radius ~0.14."""
    g = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 21), torch.linspace(-1, 1, 21), indexing="ij"), -1)
    xyz = torch.cat([g.reshape(-1, 2), torch.zeros(441, 1)], 1)
    return xyz[xyz[:, :2].norm(dim=1) > 0.12]


def nearest(points: torch.Tensor, to: torch.Tensor) -> torch.Tensor:
    return knn(to[None], points[None], 1)[0][0, :, 0].sqrt()


def test_fill_pool_reaches_into_a_hole_and_drops_strays():
    xyz = holed_grid()
    stray = torch.tensor([[0.5, 0.5, 0.2]])
    cand = torch.cat([xyz, stray])
    pool = hf.fill_pool(xyz, cand, 4, need=len(xyz))
    origin = torch.zeros(1, 3)
    assert float(nearest(cand, origin)) > 0.14
    assert float(nearest(pool, origin)) < 0.05  # a lifted Delaunay midpoint sits in the hole
    assert float(nearest(pool, stray)) > 0.1  # the stray (2 spacings off the plane) left the pool
    assert float(pool[:, 2].abs().max()) < 1e-5  # everything kept lies on the plane
    kept = nearest(pool, xyz)
    assert float(kept.max()) < 1e-6  # every on-surface candidate stays


def centroids(xyz: torch.Tensor) -> torch.Tensor:
    local = local_delaunay(xyz[None])
    return hf.triangle_centroids(xyz, local, local.d2[0, :, 0].sqrt().median())


def test_triangle_centroids_cover_a_plane_once_and_reach_farther_than_edge_midpoints():
    g = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(torch.arange(30.0), torch.arange(30.0), indexing="ij"), -1).reshape(-1, 2)
    xyz = torch.cat([(grid + 0.3 * torch.rand(900, 2, generator=g)) / 30, torch.zeros(900, 1)], 1)
    cen = centroids(xyz)
    assert float(cen[:, 2].abs().max()) < 1e-6  # flat corners: the lift leaves the centroid on the plane
    assert len(torch.unique(cen, dim=0)) == len(cen)  # each triangle once, not once per corner
    assert 1.6 * len(xyz) < len(cen) < 2.1 * len(xyz)  # a planar triangulation has about 2 N triangles
    probe = torch.cat([torch.rand(20000, 2, generator=g) * 0.75 + 0.1, torch.zeros(20000, 1)], 1)  # the interior
    with_mids = torch.cat([xyz, delaunay_prior(xyz[None], 4)[0, :, 1:].reshape(-1, 3)])
    gap, filled = nearest(with_mids, probe).max(), nearest(torch.cat([with_mids, cen]), probe).max()
    assert float(filled) < 0.8 * float(gap)  # the centres of the triangles are where the midpoints leave gaps


def test_triangle_centroids_are_lifted_onto_a_sphere():
    i = torch.arange(1000.0) + 0.5
    phi, theta = torch.acos(1 - 2 * i / 1000), torch.pi * (1 + 5**0.5) * i
    xyz = torch.stack([phi.sin() * theta.cos(), phi.sin() * theta.sin(), phi.cos()], 1)
    cen = centroids(xyz)
    flat = xyz[knn(cen[None], xyz[None], 3)[1][0]].mean(1)  # the corners' plain centroid
    assert len(cen) > 1.8 * len(xyz)
    assert float((cen.norm(dim=1) - 1).abs().mean()) < 0.3 * float((flat.norm(dim=1) - 1).abs().mean())


def test_triangle_centroids_leave_out_triangles_across_a_crease():
    t = torch.linspace(-1, 1, 21)
    u, v = torch.meshgrid(t, t, indexing="ij")
    roof = torch.stack([u.reshape(-1), v.reshape(-1), 1 - u.abs().reshape(-1)], 1)  # two planes at 90 degrees
    cen = centroids(roof)
    off = (cen[:, 2] - (1 - cen[:, 0].abs())).abs()
    assert len(cen) > len(roof) and float(off.max()) < 0.2 * 0.1 * 2**0.5


def test_fill_pool_keeps_every_candidate_when_the_screen_leaves_too_few(monkeypatch, capsys):
    xyz = holed_grid()
    cand = (xyz + torch.tensor([0.0, 0.0, 0.5])).repeat(16, 1)  # all far off the plane, more than the fill gives
    assert float(nearest(hf.fill_pool(xyz, cand, 4, need=len(xyz)), cand).min()) > 0.4  # enough left: all dropped
    pool = hf.fill_pool(xyz, cand, 4, need=len(cand))
    assert len(pool) > len(cand) and float(nearest(pool, cand).max()) == 0.0
    assert f"{hf.FILL_MAX_POINTS:,} input points" in FILL_HELP  # the help (torch-free) names the real cap
    monkeypatch.setattr(hf, "FILL_MAX_POINTS", 100)
    assert hf.fill_pool(xyz, cand, 4, need=1) is cand  # above the cap: unchanged, and said
    assert "hole filling skipped for a pass over 436 points" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("pu-mfa", 4, **TINY).eval()


def capped_sphere(n: int) -> torch.Tensor:
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(3))
    x = x / x.norm(dim=1, keepdim=True)
    return x[x[:, 2] < 0.97]  # a cap of ~14 degrees removed: a hole a few spacings wide


def test_fill_covers_a_hole_better_with_exact_counts(tiny):
    xyz = capped_sphere(700)
    filled = torch.as_tensor(upsample_cloud(tiny, xyz, 4, batch=8))
    plain = torch.as_tensor(upsample_cloud(tiny, xyz, 4, batch=8, fill=False))
    assert filled.shape == plain.shape == (4 * len(xyz), 3)
    rim = torch.tensor([[0.0, 0.0, 1.0]])
    ring = torch.stack([torch.tensor([np.sin(a) * 0.22, np.cos(a) * 0.22, 0.975]) for a in np.linspace(0, 6, 12)])
    probe = torch.cat([rim, ring / ring.norm(dim=1, keepdim=True)]).float()
    assert float(nearest(filled, probe).mean()) < float(nearest(plain, probe).mean())
    assert float((filled.norm(dim=1) - 1).abs().max()) < 0.03  # still on the sphere


def test_chunked_passes_say_they_do_not_fill(tiny, capsys):
    xyz = capped_sphere(3000)
    out = upsample_large(tiny, xyz, 4, max_memory_mib=260, batch=8)
    assert out.shape == (4 * len(xyz), 3)
    assert "hole filling skipped for a pass over" in capsys.readouterr().err
    upsample_large(tiny, xyz, 4, max_memory_mib=260, batch=8, fill=False)
    assert "hole filling" not in capsys.readouterr().err


def test_cli_no_fill_is_the_plain_pass(tmp_path, tiny):
    save_model(tiny, tmp_path / "run")
    xyz = capped_sphere(300)
    write_cloud(tmp_path / "c.xyz", xyz.numpy())
    args = ["pc", "upsample", str(tmp_path / "c.xyz"), "--run", str(tmp_path / "run"), "--device", "cpu"]
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "f.xyz")]).exit_code == 0
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "p.xyz"), "--no-fill"])
    assert r.exit_code == 0, r.output
    f, p = read_cloud(tmp_path / "f.xyz"), read_cloud(tmp_path / "p.xyz")
    assert f.shape == p.shape == (4 * len(xyz), 3)
    np.testing.assert_allclose(p, upsample_cloud(tiny, read_cloud(tmp_path / "c.xyz"), 4, batch=4, fill=False),
                               atol=1e-5)
    assert not np.allclose(np.sort(f, 0), np.sort(p, 0))


def test_eval_no_fill_is_recorded_and_scores_the_plain_pass(tmp_path, tiny):
    save_model(tiny, tmp_path / "run")
    test = tmp_path / "test"
    for k in range(2):
        write_cloud(test / "input_256" / f"s{k}.xyz", capped_sphere(290 + k)[:256].numpy())
        write_cloud(test / "gt_1024" / f"s{k}.xyz", capped_sphere(1200 + k)[:1024].numpy())
    base = ["pc", "eval", "--run", str(tmp_path / "run"), "--test-dir", str(test), "--device", "cpu", "--renders", "0"]
    for flag, out in (("--fill", "f"), ("--no-fill", "p")):
        r = runner.invoke(app, [*base, flag, "--out", str(tmp_path / out)])
        assert r.exit_code == 0, r.output
    filled, plain = (json.loads((tmp_path / o / "results.json").read_text()) for o in ("f", "p"))
    assert filled["fill"] is True and plain["fill"] is False
    x = read_cloud(test / "input_256" / "s0.xyz")
    np.testing.assert_allclose(read_cloud(tmp_path / "p" / "model" / "s0.xyz"),
                               upsample_cloud(tiny, x, 4, batch=4, fill=False), atol=1e-5)
    assert not np.allclose(read_cloud(tmp_path / "f" / "model" / "s0.xyz"),
                           read_cloud(tmp_path / "p" / "model" / "s0.xyz"))
