"""Names are data, never paths: hostile video ids, run names and set names never write outside the output folder."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affcli.cache.store import FeatureStore
from affcli.cli import app
from affcli.common.names import safe_name
from affcli.heads.data.abaw_io import write_predictions
from affcli.heads.ablate.run import run_one
from affcli.heads.ablate.grid import RunSpec, run_name
from affcli.heads.infer.predict import predict_run
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

torch.set_num_threads(1)
HOSTILE = ["../X", "..", ".", "a/b", "a\\b", "\x00z", "", "C:evil", "x" * 300]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", HOSTILE + ["/abs/path"])
def test_safe_name_refuses_with_one_line(name):
    with pytest.raises(ValueError, match="video id .* cannot name a file") as e:
        safe_name(name, "video id")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["video001", "12-24-1920x1080_left", "a b.c", "ümlaut", "x" * 200])
def test_safe_name_keeps_plain_names(name):
    assert safe_name(name) == name


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("hostile")
    cache, labels = make_synthetic(root / "s", n_videos=3, n_frames=40, dims=(12, 8))
    run = root / "run"
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "-f", VISUAL, "-f", AUDIO,
                                 "--epochs", "1", "--window", "8", "--d-model", "8", "--device", "cpu", "--no-plots",
                                 "--out", str(run)])
    assert r.exit_code == 0, r.output
    return root, cache, run


def _hostile_cache(root: Path, cache: Path, ids: list[str]) -> Path:
    """A cache imported (`cache import-h5`) from an export whose video ids were replaced by `ids`."""
    h5 = root / f"x{len(list(root.glob('*.h5')))}.h5"
    assert CliRunner().invoke(app, ["cache", "export-h5", str(cache), str(h5)]).exit_code == 0
    with h5py.File(h5, "a") as f:
        for key in (k for k in f if k != "_text"):
            groups = sorted(f[key])
            for g, vid in zip(groups, ids):
                f[key][g].attrs["video_id"] = vid
            for g in groups[len(ids):]:
                del f[key][g]
    out = root / f"hostile{h5.stem}.zarr"
    r = CliRunner().invoke(app, ["cache", "import-h5", str(h5), str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_predict_per_video_never_writes_outside_out(trained):
    root, cache, run = trained
    outside = root / "outside"
    ids = ["../X", str(outside / "abs"), "a/b"]
    hostile = _hostile_cache(root, cache, ids)
    assert sorted(FeatureStore(hostile, mode="r").videos(VISUAL)) == sorted(ids)
    before = _files(root)
    out = root / "box" / "out"
    r = CliRunner().invoke(app, ["predict", "--run", str(run), "--cache", str(hostile), "--out", str(out),
                                 "--style", "per-video"])
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot name a file" in lines[0]
    for vid in ids:
        with pytest.raises(ValueError, match="cannot name a file"):
            predict_run(run, hostile, out, videos=[vid], style="per-video", device="cpu")
    assert _files(root) == before and not outside.exists()
    r = CliRunner().invoke(app, ["predict", "--run", str(run), "--cache", str(hostile), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {p.relative_to(out) for p in _files(out)} == {Path("predictions_expr.txt"), Path("predictions_expr.parquet")}
    assert _files(root) - before == _files(out)


@pytest.mark.parametrize("vid", HOSTILE)
def test_prediction_writer_refuses_hostile_ids(tmp_path, vid):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="cannot name a file"):
        write_predictions(out, "expr", {vid: {"expr": np.zeros(3, np.int64)}}, style="per-video")
    assert not _files(tmp_path)


def test_ablate_run_names_are_checked(tmp_path):
    assert run_name({"fusion": "../../x", "seed": 0}) == "x__seed0"
    spec = RunSpec("../escaped", {}, {}, "h", "expr")
    with pytest.raises(ValueError, match="run name '../escaped'"):
        run_one(spec, tmp_path / "abl", runner=lambda cfg, d: {"main": 1.0})
    assert not _files(tmp_path) and not (tmp_path / "escaped").exists()
