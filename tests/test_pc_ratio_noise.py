"""Any upsampling ratio (exactly round(ratio N) points, whole, chunked and through the CLI), one-line errors for bad
ratios and noise levels, seeded input noise relative to the radius, and `pc eval --noise` tables per level."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affcli.cli import app
from affcli.pointcloud.baselines import midpoint_upsample
from affcli.pointcloud.checkpoint import save_model
from affcli.pointcloud.chunked import chunked_pass, upsample_large
from affcli.pointcloud.errors import PointCloudError
from affcli.pointcloud.io import read_cloud, write_cloud
from affcli.pointcloud.models import create_model
from affcli.pointcloud.noise import add_noise, parse_levels
from affcli.pointcloud.ops import knn
from affcli.pointcloud.upsample import check_ratio, passes_for, upsample_cloud

TINY = {"dim": 16, "growth": 8, "dense_layers": 2, "scales": [8, 16], "levels": 1, "heads": 2, "code_dim": 8,
        "prior": "delaunay", "prior_features": True, "offset_bound": 1.0}
runner = CliRunner()


def sphere(n: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("pu-mfa", 4, **TINY).eval()  # untrained: exactly its Delaunay prior (zero-initialised head)


@pytest.mark.parametrize("ratio", [2.5, 3, 5, 6])
def test_any_ratio_gives_round_ratio_n_points_on_the_surface(tiny, ratio):
    xyz = sphere(301)
    up = torch.as_tensor(upsample_cloud(tiny, xyz, ratio, batch=8))
    assert up.shape == (round(ratio * 301), 3) and torch.isfinite(up).all()
    assert float((up.norm(dim=1) - 1).abs().max()) < 0.02
    spacing = knn(xyz[None], xyz[None], 2)[0][0, :, 1].sqrt().mean()
    assert float(knn(xyz[None], up[None], 1)[0].sqrt().max()) < 1.5 * float(spacing)  # no input left uncovered
    assert midpoint_upsample(xyz, ratio).shape == (round(ratio * 301), 3)


def test_ratio_parsing_and_passes():
    assert passes_for(4, 2.5) == 1 and passes_for(4, 4) == 1 and passes_for(4, 5) == 2 and passes_for(4, 16) == 2
    assert check_ratio("2.5") == 2.5
    for bad in ("0", "-1", "1", "nan", "inf", "abc", "1e9"):
        with pytest.raises(PointCloudError, match="ratio"):
            check_ratio(bad)


def test_chunked_thinning_keeps_the_share_of_every_chunk(tiny):
    class Toy(torch.nn.Module):
        ratio = 4

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 12)

        def forward(self, x):
            return (x[:, :, None, :] + 0.01 * self.lin(x).view(*x.shape[:2], 4, 3)).reshape(len(x), -1, 3)

    torch.manual_seed(0)
    xyz = sphere(3000)
    up = chunked_pass(Toy().eval(), xyz, 16, 800, keep=round(2.5 * 3000))
    assert up.shape == (7500, 3)
    assert float(knn(up[None], xyz[None], 1)[0].sqrt().max()) < 0.05  # thinning picks children, not strays
    assert upsample_large(Toy().eval(), sphere(2000), 6, 215).shape == (12000, 3)  # two passes, chunked, thinned


def test_cli_ratio_2_5_and_bad_ratios_are_one_line(tmp_path, tiny):
    save_model(tiny, tmp_path / "run")
    cloud = tmp_path / "c.xyz"
    write_cloud(cloud, sphere(257).numpy())
    r = runner.invoke(app, ["pc", "upsample", str(cloud), "--run", str(tmp_path / "run"), "--ratio", "2.5",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert read_cloud(tmp_path / "c_x2.5.xyz").shape == (round(2.5 * 257), 3)
    for bad in ("0", "-1", "nan", "abc"):
        r = runner.invoke(app, ["pc", "upsample", str(cloud), "--run", str(tmp_path / "run"), "--ratio", bad])
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and "ratio" in lines[0], r.output


def test_noise_levels_and_seeded_noise():
    assert parse_levels("0.01,0.02") == [0.01, 0.02] and parse_levels("0") == [0.0]
    for bad in ("abc", "-0.01", "nan", "0.01,0.01", "0.9", ""):
        with pytest.raises(PointCloudError, match="noise"):
            parse_levels(bad)
    x = (sphere(4000) * 3 + 1).numpy()
    a, b = add_noise(x, 0.02, "cow"), add_noise(x, 0.02, "cow")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, add_noise(x, 0.02, "pig"))
    assert np.std(a - x) == pytest.approx(0.02 * 3, rel=0.05)  # sigma relative to the radius (3)
    np.testing.assert_array_equal(add_noise(x, 0.0, "cow"), x)


def test_eval_noise_levels_cli(tmp_path, tiny):
    save_model(tiny, tmp_path / "run")
    test = tmp_path / "test"
    for k in range(2):
        write_cloud(test / "input_256" / f"s{k}.xyz", sphere(256, seed=k).numpy())
        write_cloud(test / "gt_1024" / f"s{k}.xyz", sphere(1024, seed=10 + k).numpy())
    args = ["pc", "eval", "--run", str(tmp_path / "run"), "--test-dir", str(test), "--device", "cpu", "--renders",
            "0", "--out", str(tmp_path / "ev")]
    r = runner.invoke(app, [*args, "--noise", "0,0.02"])
    assert r.exit_code == 0, r.output
    assert "means by input noise" in r.output
    clean, noisy = (json.loads((tmp_path / "ev" / f"noise{lv}" / "results.json").read_text()) for lv in ("0", "0.02"))
    assert set(noisy["methods"]) == {"model", "midpoint", "input"} and noisy["noise"] == 0.02
    mean = {m: v["rows"][-1]["cd"] for m, v in noisy["methods"].items()}
    assert mean["model"] > clean["methods"]["model"]["rows"][-1]["cd"]  # noise costs accuracy
    noisy_in = read_cloud(tmp_path / "ev" / "noise0.02" / "input" / "s0.xyz")
    assert 0.01 < float(np.abs(np.linalg.norm(noisy_in, axis=1) - 1).mean()) < 0.03
    r = runner.invoke(app, [*args, "--noise", "abc"])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "noise level 'abc'" in lines[0], r.output
