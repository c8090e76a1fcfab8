"""Every file a point-cloud command reads, damaged, is one line naming it (exit 2), never a traceback: training HDF5
files (junk, truncated, empty, wrong keys, groups, strings, wrong shapes, NaNs, a short mesh_index), a run folder's
files (junk config, flipped bits in the model: the run's checksums.json catches them, NaN weights), meshes (junk
bytes, binary text)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from affcli.cli import app


def cli(*args: str):
    r = CliRunner().invoke(app, [str(a) for a in args])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    return r, lines


def assert_one_line(r, lines, name: str) -> None:
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], lines


def patches(n: int = 4) -> np.ndarray:
    g = np.random.default_rng(0).normal(size=(n, 256, 3))
    return (g / np.linalg.norm(g, axis=2, keepdims=True)).astype(np.float32)


def good_h5(path: Path) -> Path:
    g = patches()
    with h5py.File(path, "w") as fh:
        fh["poisson_256"], fh["poisson_1024"] = g[:, :64], g
        fh["mesh_index"] = np.arange(4)
    return path


def train(data: Path, out: Path, *extra: str):
    return cli("pc", "train", "--data", data, "--out", out, "--model", "pu-net", "--epochs", "1", "--batch-size", "4",
               "--device", "cpu", *extra)


class TestTrainingH5:
    """`pc train --data` of a damaged or wrong HDF5 file."""

    def _bytes(self, tmp_path: Path, how: str) -> Path:
        raw = good_h5(tmp_path / "good.h5").read_bytes()
        data = {"junk": np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
                "truncated": raw[: len(raw) // 2], "empty": b"", "text": b"x y z\n1 2 3\n"}[how]
        (tmp_path / "bad.h5").write_bytes(data)
        return tmp_path / "bad.h5"

    @pytest.mark.parametrize("how", ["junk", "truncated", "empty", "text"])
    def test_damaged_bytes(self, tmp_path, how):
        assert_one_line(*train(self._bytes(tmp_path, how), tmp_path / "run"), "bad.h5")

    @pytest.mark.parametrize("how", ["keys", "group", "strings", "two_columns", "flat", "nan", "short_index"])
    def test_wrong_content(self, tmp_path, how):
        g, path = patches(), tmp_path / "bad.h5"
        with h5py.File(path, "w") as fh:
            if how == "keys":
                fh["a"] = g
            elif how == "group":
                fh.create_group("poisson_256")
                fh["poisson_1024"] = g
            elif how == "strings":
                fh["poisson_256"], fh["poisson_1024"] = np.array([b"abc"] * 4), np.array([b"abc"] * 4)
            elif how == "two_columns":
                fh["poisson_256"], fh["poisson_1024"] = g[:, :64, :2], g[:, :, :2]
            elif how == "flat":
                fh["poisson_256"], fh["poisson_1024"] = g[0, :64], g[0]
            elif how == "nan":
                g[1, 5, 2] = np.nan
                fh["poisson_256"], fh["poisson_1024"] = g[:, :64], g
            elif how == "short_index":
                fh["poisson_256"], fh["poisson_1024"] = g[:, :64], g
                fh["mesh_index"] = np.arange(2)
        assert_one_line(*train(path, tmp_path / "run", "--val-every", "2"), "bad.h5")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("pcrun")
    r, lines = train(good_h5(base / "train.h5"), base / "run")
    assert r.exit_code == 0, lines
    return base / "run"


class TestRunFolder:
    """`pc upsample --run` and a resumed `pc train` of a run folder whose files were damaged after it was written."""

    def _copy(self, run_dir: Path, tmp_path: Path) -> Path:
        import shutil

        shutil.copytree(run_dir, tmp_path / "run")
        return tmp_path / "run"

    def _cloud(self, tmp_path: Path) -> Path:
        p = np.random.default_rng(0).normal(size=(300, 3))
        np.save(tmp_path / "c.npy", (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32))
        return tmp_path / "c.npy"

    @pytest.mark.parametrize("file,how", [("model.safetensors", "bitflip"), ("model.safetensors", "truncate"),
                                          ("checksums.json", "junk")])
    def test_upsample_with_damaged_run(self, run_dir, tmp_path, file, how):
        run = self._copy(run_dir, tmp_path)
        raw = bytearray((run / file).read_bytes())
        if how == "bitflip":
            raw[len(raw) - 10] ^= 0x10  # inside the last tensor's data: still a valid safetensors file
        elif how == "truncate":
            raw = raw[: len(raw) // 2]
        else:
            raw = bytearray(b"\xe8\x00{not json")
        (run / file).write_bytes(bytes(raw))
        r, lines = cli("pc", "upsample", self._cloud(tmp_path), "--run", run, "--out", tmp_path / "o.npy",
                       "--device", "cpu")
        assert_one_line(r, lines, file)

    @pytest.mark.parametrize("file", ["config.json", "metrics.json", "optimizer.safetensors"])
    def test_resume_with_damaged_run(self, run_dir, tmp_path, file):
        run = self._copy(run_dir, tmp_path)
        (run / file).write_bytes(b"\x00\xff junk")
        cfg = __import__("json").loads((run_dir / "config.json").read_text())
        assert_one_line(*train(Path(cfg["data"]), run, "--epochs", "2"), file)

    def test_nan_weights_without_checksums(self, run_dir, tmp_path):
        from safetensors.torch import load_file, save_file
        from safetensors import safe_open

        run = self._copy(run_dir, tmp_path)
        (run / "checksums.json").unlink()
        with safe_open(str(run / "model.safetensors"), "pt") as fh:
            meta = fh.metadata()
        state = load_file(run / "model.safetensors")
        name = next(k for k, v in state.items() if v.is_floating_point())
        state[name][...] = float("nan")
        save_file(state, run / "model.safetensors", metadata=meta)
        r, lines = cli("pc", "upsample", self._cloud(tmp_path), "--run", run, "--out", tmp_path / "o.npy",
                       "--device", "cpu")
        assert_one_line(r, lines, "NaN")


class TestMeshes:
    """`pc metrics --mesh` of damaged meshes."""

    @pytest.mark.parametrize("ext,data", [(".off", b"\xe8\x91junk\xff"), (".obj", b"v 1 2 \xff\xfe\n"),
                                          (".off", b"OFF\n3 1 0\n0 0 0\n1 0 0\n"), (".ply", b"ply\nformat ascii")])
    def test_damaged_mesh(self, tmp_path, ext, data):
        p = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
        np.save(tmp_path / "a.npy", p)
        (tmp_path / f"m{ext}").write_bytes(data)
        r, lines = cli("pc", "metrics", "--pred", tmp_path / "a.npy", "--gt", tmp_path / "a.npy", "--mesh",
                       tmp_path / f"m{ext}", "--device", "cpu")
        assert_one_line(r, lines, f"m{ext}")
