"""Every bad input is one line: junk grid files, junk/truncated/float16 .ply, object or junk .npy, unloadable
checkpoints, unknown backbone names and `cache rm` on a symlinked group each exit 2 with one line naming the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from affcli.cache.store import FeatureStore
from affcli.cli import app
from affcli.pointcloud.io import read_cloud
from affcli.synthetic.features import VISUAL, make_synthetic

JUNK = bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8))
HEADER = "ply\nformat binary_little_endian 1.0\nelement vertex {n}\nproperty {t} x\nproperty {t} y\nproperty {t} z\nend_header\n"


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _refused(args: list[str], name: str) -> str:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = _lines(r.output)
    assert len(lines) == 1 and name in lines[0], r.output
    return lines[0]


@pytest.fixture
def points(tmp_path) -> tuple[Path, np.ndarray]:
    pts = np.random.default_rng(1).random((64, 3)).astype(np.float32)
    path = tmp_path / "gt.xyz"
    np.savetxt(path, pts)
    return path, pts


def _ply(path: Path, pts: np.ndarray, t: str, dtype: str, keep: float = 1.0) -> Path:
    raw = HEADER.format(n=len(pts), t=t).encode() + pts.astype(dtype).tobytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


@pytest.mark.parametrize("make,what", [
    (lambda d, p: (d / "junk.ply").write_bytes(JUNK) and d / "junk.ply", "not a PLY file"),
    (lambda d, p: _ply(d / "cut.ply", p, "float", "<f4", keep=0.6), "truncated PLY"),
    (lambda d, p: _ply(d / "odd.ply", p, "float128", "<f4"), "unknown property type 'float128'"),
    (lambda d, p: np.save(d / "obj.npy", np.array([{"a": 1}, None], dtype=object)) or d / "obj.npy", "not a numeric"),
    (lambda d, p: np.save(d / "str.npy", np.array([["a", "b", "c"]])) or d / "str.npy", "numeric"),
    (lambda d, p: (d / "junk.npy").write_bytes(JUNK) and d / "junk.npy", "not a numeric .npy"),
    (lambda d, p: (d / "junk.xyz").write_bytes(JUNK) and d / "junk.xyz", "not a text point cloud"),
])
def test_bad_cloud_is_one_line(tmp_path, points, make, what):
    gt, _ = points
    bad = make(tmp_path, points[1])
    line = _refused(["pc", "metrics", "--pred", str(bad), "--gt", str(gt), "--device", "cpu"], bad.name)
    assert what in line


def test_float16_ply_is_read(tmp_path, points):
    _, pts = points
    got = read_cloud(_ply(tmp_path / "half.ply", pts, "half", "<f2"))
    np.testing.assert_array_equal(got, pts.astype(np.float16).astype(np.float32))


def test_binary_grid_file_is_one_line(tmp_path):
    for name in ("junk.toml", "junk.yaml"):
        (tmp_path / name).write_bytes(JUNK)
        line = _refused(["ablate", str(tmp_path / name), "--out", str(tmp_path / "abl")], name)
        assert "not a text file" in line
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert "not a list" in _refused(["ablate", str(tmp_path / "list.yaml"), "--out", str(tmp_path / "abl")], "list.yaml")
    assert not (tmp_path / "abl").exists()


def test_unloadable_checkpoints_are_one_line(tmp_path, points):
    gt, _ = points
    run = tmp_path / "pcrun"
    run.mkdir()
    (run / "model.safetensors").write_bytes(JUNK)
    _refused(["pc", "upsample", "--run", str(run), "--input", str(gt), "--out", str(tmp_path / "o.xyz"),
              "--device", "cpu"], "model.safetensors")
    cache, labels = make_synthetic(tmp_path / "s", n_videos=3, n_frames=30, dims=(6, 4))
    head = tmp_path / "head"
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "--epochs", "1",
                                 "--window", "8", "--d-model", "8", "--device", "cpu", "--no-plots", "--out", str(head)])
    assert r.exit_code == 0, r.output
    (head / "model.safetensors").write_bytes((head / "model.safetensors").read_bytes()[:300])
    for cmd in (["evaluate", "--run", str(head)], ["predict", "--run", str(head), "--out", str(tmp_path / "p")]):
        assert "unreadable checkpoint" in _refused(cmd, "model.safetensors")


def test_unknown_backbone_name_is_one_line(tmp_path):
    frames = tmp_path / "frames" / "v"
    frames.mkdir(parents=True)
    for spec, what in (("fer:foo", "unknown fer model 'foo'"), ("nokind:x", "valid backbone names")):
        r = CliRunner().invoke(app, ["extract", "--cache", str(tmp_path / "c.zarr"), "--frames-dir",
                                     str(tmp_path / "frames"), "-b", spec, "--device", "cpu"])
        assert r.exit_code == 2 and len(_lines(r.stderr)) == 1 and what in r.stderr, r.output
        assert len(_lines(r.output)) == 1


def test_cache_rm_refuses_a_symlinked_group(tmp_path):
    cache, _ = make_synthetic(tmp_path / "s", n_videos=2, n_frames=20, dims=(6, 4))
    target = tmp_path / "elsewhere" / "clip_synth"
    target.parent.mkdir()
    (cache / "clip_synth").rename(target)
    (cache / "clip_synth").symlink_to(target, target_is_directory=True)
    r = CliRunner().invoke(app, ["cache", "rm", str(cache), VISUAL])
    assert r.exit_code == 2 and len(_lines(r.stderr)) == 1 and "symbolic link" in r.stderr
    assert "clip_synth" in r.stderr and (target / "video000").is_dir()
    assert VISUAL in FeatureStore(cache, mode="r").feature_sets()
