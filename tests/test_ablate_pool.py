"""`ablate --jobs N` pool: workers map the parent's loaded data (one load per grid), get their next run the moment they
return one, and a worker killed mid-run fails only what it held, which the next invocation retries."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from affcli.heads.ablate.execute import run_grid
from affcli.heads.ablate.run import clear_data_cache
from affcli.common.runs import read_json
from affcli.heads.ablate.grid import grid_from_dict
from affcli.heads.ablate.report import GRID_FILE
from affcli.heads.ablate.validate import build_runs
from affcli.heads.metrics import f1_per_label
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

BASE = {"task": "expr", "features": [VISUAL, AUDIO], "epochs": 1, "window": 16, "stride": 16, "batch_size": 32,
        "plots": False, "save_predictions": False, "warmup": 0}
QUIET = {"console": Console(quiet=True), "progress": False}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("pool"), n_videos=4, n_frames=64, dims=(8, 6))


def _runs(synth, n: int, device: str = "cpu"):
    return build_runs(grid_from_dict({"base": {**BASE, "device": device}, "axes": {"seeds": list(range(n))}}), *synth)


def in_worker() -> bool:
    return multiprocessing.parent_process() is not None


def hold_parent_runner(cfg: dict, run_dir: Path) -> dict:
    """In a worker: a quick run that leaves a `done` mark. In the parent: wait (up to 60 s) until workers have done
    every other run, which they can only do if they are fed while the parent is busy."""
    root = run_dir.parent
    if in_worker():
        (run_dir / "done").touch()
        return {"main": 1.0}
    n_runs, end = len(read_json(root.parent / GRID_FILE)["runs"]), time.monotonic() + 60
    while len(list(root.glob("*/done"))) < n_runs - 1:
        if time.monotonic() > end:
            return {"main": 0.0}
        time.sleep(0.05)
    return {"main": 1.0}


def kill_once_runner(cfg: dict, run_dir: Path) -> dict:
    """SIGKILLs its worker on seed 2 the first time (a mark beside the runs folder), a normal run otherwise."""
    mark = run_dir.parent.parent / "killed"
    if cfg["seed"] == 2 and not mark.exists():
        mark.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return {"main": 0.5}


def test_workers_use_the_parents_loaded_data(synth, tmp_path):
    runs = _runs(synth, 6)
    clear_data_cache()
    res = run_grid(runs, tmp_path, jobs=2, threads=1, **QUIET)
    assert res.count("ok") == 6
    assert len({o.pid for o in res.ran}) == 2, "the parent and one worker both run grid points"
    assert res.data_loads == 1, "a 1-data-key grid loads its features once, in the parent; workers map that copy"
    assert sum(o.loads for o in res.ran) == 0


def test_a_worker_is_fed_while_the_parent_runs(synth, tmp_path):
    runs = _runs(synth, 8)
    res = run_grid(runs, tmp_path, jobs=2, threads=1, runner=hold_parent_runner, **QUIET)
    parent = [o for o in res.ran if o.pid == os.getpid()]
    assert len(parent) == 1 and parent[0].main == 1.0, "the worker waited for the parent to hand it runs"
    assert res.count("ok") == 8


def test_killed_worker_fails_its_run_and_the_next_invocation_retries_it(synth, tmp_path):
    runs = _runs(synth, 6, device="cuda")  # CUDA grids run every point in a worker (the runner never touches a GPU)
    res = run_grid(runs, tmp_path, jobs=2, threads=1, runner=kill_once_runner, **QUIET)
    by_seed = {r.config["seed"]: o for r in runs for o in res.outcomes if o.name == r.name}
    assert by_seed[2].status == "failed" and by_seed[2].error.startswith("WorkerDied")
    assert all(o.status == "ok" or o.error.startswith("WorkerDied") for o in res.outcomes)
    assert res.count("ok") >= 4, "only the runs in flight when the worker died may fail"
    again = run_grid(runs, tmp_path, jobs=2, threads=1, runner=kill_once_runner, **QUIET)
    assert {o.name for o in again.ran} == {o.name for o in res.outcomes if o.status == "failed"}
    assert again.count("ok") == len(again.ran) and again.count("skipped") == res.count("ok")


def test_f1_per_label_is_bit_equal_to_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for i in range(200):
        n, size = int(rng.integers(1, 9)), int(rng.integers(1, 200))
        true, pred = rng.integers(0, n, size), rng.integers(-1, n + 1, size)
        for zd in (0, 1):
            ref = f1_score(true, pred, labels=list(range(n)), average=None, zero_division=zd)
            assert np.array_equal(f1_per_label(true, pred, list(range(n)), zd), ref), (i, zd)
