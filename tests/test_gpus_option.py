"""`extract --gpus all|0,1`: the device list resolves against the machine's CUDA devices (count monkeypatched), each
listed GPU gets one pinned worker, and a machine without CUDA or a missing index is a one-line error."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from affcli.cli import app
from affcli.common import cluster
from affcli.common.cluster import resolve_gpus, worker_envs


@pytest.mark.parametrize("spec, count, expected", [
    ("all", 3, [0, 1, 2]), ("ALL", 1, [0]), ("0,1", 2, [0, 1]), (" 2 , 0 ", 4, [2, 0]), ("1", 2, [1]),
])
def test_resolve_lists(spec, count, expected):
    assert resolve_gpus(spec, count=count) == expected


@pytest.mark.parametrize("spec, count, message", [
    ("0,2", 2, "no CUDA device 2 (visible: 0..1)"),
    ("-1", 2, "no CUDA device -1"),
    ("0", 0, "no CUDA device is visible"),
    ("all", 0, "no CUDA device is visible"),
    ("0,0", 2, "listed twice"),
    ("zero", 2, "'all' or device indices"),
    ("0,,1", 2, "'all' or device indices"),
    ("", 2, "'all' or device indices"),
])
def test_resolve_errors(spec, count, message):
    with pytest.raises(ValueError, match="--gpus") as e:
        resolve_gpus(spec, count=count)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_resolve_uses_machine_count(monkeypatch):
    monkeypatch.setattr(cluster, "gpu_count", lambda: 2)
    assert resolve_gpus("all") == [0, 1]
    with pytest.raises(ValueError, match="no CUDA device 3"):
        resolve_gpus("3")


def test_one_worker_per_listed_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_envs(0, [0, 2])] == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_envs(0, [2, 0])] == ["6", "4"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_envs(5, 2)] == ["4", "5"]


def _refused(args: list[str], text: str) -> str:
    r = CliRunner().invoke(app, args)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and text in lines[0], r.output
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cli_refuses_without_cuda(tmp_path):
    base = ["extract", "--cache", str(tmp_path / "c.zarr"), "--video-dir", str(tmp_path), "-b", "clip:tiny"]
    line = _refused(base + ["--gpus", "0"], "no CUDA device is visible")
    assert "--gpus 0" in line
    _refused(base + ["--gpus", "all"], "no CUDA device is visible")
    _refused(base + ["--gpus", "0,x"], "'all' or device indices")
    assert not (tmp_path / "c.zarr").exists()


def test_cli_refuses_bad_combinations(tmp_path):
    base = ["extract", "--cache", str(tmp_path / "c.zarr"), "--video-dir", str(tmp_path), "-b", "clip:tiny",
            "--gpus", "all"]
    _refused(base + ["--dask-local", "2"], "without --dask-local")
    _refused(base + ["--device", "cpu"], "--device cpu")
