"""Large-cloud upsampling: the assign merge runs only the patches some kept point takes its children from, with the
same children as running every patch (to float rounding: batches hold other patches); forward passes never hold a
lone patch; a chunked CLI run writes progress lines to a non-terminal stderr (a short one at the default interval
writes none, and the same cloud)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from affcli.pointcloud.checkpoint import save_model
from affcli.pointcloud.io import read_cloud, write_cloud
from affcli.pointcloud.models import create_model
from affcli.pointcloud.ops import normalize_unit_sphere
from affcli.pointcloud.upsample import PATCH, _batches, _central, _cover, _infer, _patches, assign_children
from affcli.pointcloud.ops import farthest_point_sample

TINY = {"dim": 16, "growth": 8, "dense_layers": 2, "scales": [8, 16], "levels": 1, "heads": 2, "code_dim": 8,
        "prior": "phong", "prior_features": True, "offset_bound": 1.0}


def sphere(n: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True) * (1 + 0.05 * torch.rand(n, 1, generator=torch.Generator().manual_seed(1)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("pu-mfa", 4, **TINY).eval()
    with torch.no_grad():  # a non-zero head, so outputs depend on each patch's content (not only the prior)
        for p in m.head.parameters():
            p.normal_(0, 0.3)
    return m


def every_patch(model, xyz: torch.Tensor, own: int, factor: float) -> tuple[torch.Tensor, int]:
    """The assign merge as it ran before: every patch through the network, each own point's central children (and
    how many patches that took)."""
    n, size = len(xyz), min(PATCH, len(xyz))
    seeds = farthest_point_sample(xyz[None], max(1, int(np.ceil(n / size * factor))))[0]
    idx, seeds = _cover(xyz, _patches(xyz, xyz[seeds], size), seeds, size, own)
    up, _ = _infer(model, xyz[idx], 4)
    return up.reshape(-1, model.ratio, 3)[_central(xyz, idx, seeds)[:own]].reshape(-1, 3), len(idx)


@pytest.mark.parametrize("own,factor", [(3000, 3.0), (3000, 1.5), (1800, 1.5), (900, 1.0)])
def test_assign_runs_only_used_patches_with_the_same_children(model, own, factor):
    xyz, _, _ = normalize_unit_sphere(sphere(3000))
    xyz = xyz[xyz[:, 0].argsort()]  # own points first: one side of the sphere, the rest its halo
    calls = []
    import affcli.pointcloud.upsample as up_mod

    real = up_mod._infer
    up_mod._infer = lambda m, pts, b: calls.append(len(pts)) or real(m, pts, b)
    try:
        got = assign_children(model, xyz, 4, own=own, seed_factor=factor)
    finally:
        up_mod._infer = real
    want, n_all = every_patch(model, xyz, own, factor)
    assert got.shape == (own * 4, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)  # batches of other patches: float rounding only
    assert sum(calls) <= n_all
    if own < 3000:
        assert sum(calls) < 0.8 * n_all  # the halo's own patches are skipped


@pytest.mark.parametrize("n,batch", [(1, 4), (5, 4), (9, 4), (8, 4), (17, 16), (3, 1)])
def test_batches_cover_all_patches_without_a_lone_one(n, batch):
    spans = _batches(n, batch)
    assert [s for s, _ in spans] == sorted(s for s, _ in spans) and spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    if n > 1 and batch > 1:
        assert all(e - s >= 2 for s, e in spans)


def test_chunked_cli_writes_progress_lines_to_a_pipe(tmp_path, model):
    save_model(model, tmp_path / "run")
    cloud = tmp_path / "c.npy"
    write_cloud(cloud, sphere(3000).numpy())
    code = ("import sys, affcli.pointcloud.commands as c\nc.LOG_EVERY_S = float(sys.argv.pop(1))\n"
            "from affcli.cli import app\napp(prog_name='affcli')")
    args = ["pc", "upsample", str(cloud), "--run", str(tmp_path / "run"), "--max-memory", "200", "--device", "cpu",
            "--threads", "1", "--merge", "assign", "--out"]
    res = subprocess.run([sys.executable, "-c", code, "0", *args, str(tmp_path / "o.npy")], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("progress: x4 c.npy pass 1: chunk ")]
    done = [tuple(map(int, ln.split("chunk ")[1].split(",")[0].split("/"))) for ln in lines]
    assert len(done) >= 2 and done[-1][0] == done[-1][1] == len(done), res.stderr
    assert all("s elapsed" in ln for ln in lines) and "s left in this pass" in lines[0]
    assert read_cloud(tmp_path / "o.npy").shape == (12000, 3)
    quiet = subprocess.run([sys.executable, "-c", code, "10", *args, str(tmp_path / "q.npy")], capture_output=True,
                           text=True, timeout=300)
    assert quiet.returncode == 0 and "progress:" not in quiet.stderr, quiet.stderr
    np.testing.assert_array_equal(read_cloud(tmp_path / "q.npy"), read_cloud(tmp_path / "o.npy"))
