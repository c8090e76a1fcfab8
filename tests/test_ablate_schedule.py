"""`ablate --jobs N` scheduling: longest runs first, and on CPU the warm parent shares the grid with N-1 workers."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from affcli.heads.ablate.execute import run_grid
from affcli.heads.ablate.run import pack_by_cost, parent_shares_work, preload
from affcli.heads.ablate.grid import grid_from_dict
from affcli.heads.ablate.report import RUN_FILE
from affcli.heads.ablate.validate import build_runs
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

BASE = {"task": "expr", "features": [VISUAL, AUDIO], "epochs": 1, "device": "cpu", "window": 16, "stride": 16,
        "batch_size": 32, "plots": False, "save_predictions": False, "warmup": 0}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("sched"), n_videos=4, n_frames=64, dims=(8, 6))


def _runs(synth, axes: dict, **base):
    return build_runs(grid_from_dict({"base": {**BASE, **base}, "axes": axes}), *synth)


def _d_model(r) -> int:
    return r.config["model"]["d_model"] if "model" in r.config else r.config["d_model"]


def pid_runner(cfg: dict, run_dir: Path) -> dict:
    """A stand-in trainer that records which process ran the grid point."""
    (run_dir / "pid").write_text(str(os.getpid()))
    return {"main": 0.5}


def test_pack_by_cost_puts_the_biggest_models_first(synth):
    runs = _runs(synth, {"d_model": [8, 64, 16]})
    packed = pack_by_cost(runs, preload(runs, None))
    assert [_d_model(r) for r in packed] == [64, 16, 8]
    assert [_d_model(r) for r in pack_by_cost(runs, {})] == [8, 64, 16]  # no data: stable order


def test_cpu_grid_runs_in_the_parent_and_one_worker(synth, tmp_path):
    runs = _runs(synth, {"seeds": list(range(8))})
    assert parent_shares_work(runs) and not parent_shares_work(_runs(synth, {"seeds": [0]}, device="cuda"))
    res = run_grid(runs, tmp_path, jobs=2, runner=pid_runner, console=Console(quiet=True), progress=False)
    assert res.count("ok") == 8
    pids = {(tmp_path / "runs" / r.name / "pid").read_text() for r in runs}
    assert str(os.getpid()) in pids and len(pids) == 2, pids
    assert all(json.loads((tmp_path / "runs" / r.name / RUN_FILE).read_text())["finished"] for r in runs)
