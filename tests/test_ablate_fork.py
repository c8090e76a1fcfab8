"""`ablate --jobs N` on CPU forks warm workers before the parent loads data: they run real grid points (predictions
parquet, plots) with metrics equal to a sequential run's, a SIGKILLed forked worker fails only its run, and a process
whose polars thread pool already runs spawns its workers instead (a forked child would hang in polars)."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from affcli.common.runs import read_json
from affcli.heads.ablate.execute import run_grid
from affcli.heads.ablate.grid import grid_from_dict
from affcli.heads.ablate.pool import fork_refusal
from affcli.heads.ablate.validate import build_runs
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

pytestmark = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")

GRID = {"base": {"task": "expr", "features": [VISUAL, AUDIO], "epochs": 2, "window": 16, "stride": 16,
                 "batch_size": 32, "warmup": 0, "device": "cpu"},
        "axes": {"temporal": ["mlp", "gru"], "seeds": [0, 1]}}
QUIET = {"console": Console(quiet=True), "progress": False}
# a fresh process, as `affcli ablate` is: its grid in a pool of --jobs 2, the outcome as one JSON line
SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[4])
from rich.console import Console
from affcli.heads.ablate.execute import run_grid
from affcli.heads.ablate.grid import grid_from_dict
from affcli.heads.ablate.validate import build_runs
runner = None
if sys.argv[5]:
    import test_ablate_fork
    runner = getattr(test_ablate_fork, sys.argv[5])
runs = build_runs(grid_from_dict(json.loads(sys.argv[3])), sys.argv[1], sys.argv[2])
res = run_grid(runs, sys.argv[6], jobs=2, threads=1, runner=runner, console=Console(quiet=True), progress=False)
print(json.dumps({"method": res.start_method, "start_s": res.worker_start_s, "loads": res.data_loads,
                  "outcomes": [[o.name, o.status, o.error, o.pid] for o in res.outcomes]}))
"""


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("fork"), n_videos=4, n_frames=64, dims=(8, 6))


def fresh_grid(synth, out: Path, grid: dict = GRID, runner: str = "") -> dict:
    """Run the grid with --jobs 2 in a fresh interpreter (a hang fails the test at the timeout)."""
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(synth[0]), str(synth[1]), json.dumps(grid),
                        str(Path(__file__).parent), runner, str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def kill_first_in_worker(cfg: dict, run_dir: Path) -> dict:
    """SIGKILLs the pool worker that runs first (a mark beside the runs folder); a normal run otherwise."""
    mark = run_dir.parent.parent / "killed"
    if multiprocessing.parent_process() is not None and not mark.exists():
        mark.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return {"main": 0.5}


def quick_runner(cfg: dict, run_dir: Path) -> dict:
    return {"main": float(cfg["seed"])}


def comparable(metrics: dict) -> dict:
    """metrics.json without its wall-clock fields and its config hash (which covers the run's out folder)."""
    return {**{k: v for k, v in metrics.items() if k not in ("timings", "config_hash")},
            "history": [{k: v for k, v in h.items() if k != "seconds"} for h in metrics["history"]]}


def test_forked_workers_run_real_points_equal_to_a_sequential_run(synth, tmp_path):
    got = fresh_grid(synth, tmp_path / "jobs2")
    assert got["method"] == "fork", "a fresh CPU grid forks its workers"
    assert got["start_s"] is not None and got["start_s"] < 5.0, got["start_s"]
    assert got["loads"] == 1, "the parent loads the data once and hands it to the forked worker"
    assert all(o[1] == "ok" for o in got["outcomes"]), got["outcomes"]
    pids = {o[3] for o in got["outcomes"]}
    assert len(pids) == 2, "the parent and the forked worker both ran grid points"
    seq = run_grid(build_runs(grid_from_dict(GRID), *synth), tmp_path / "jobs1", jobs=1, threads=1, **QUIET)
    assert seq.count("ok") == 4
    for name, *_ in got["outcomes"]:
        par = tmp_path / "jobs2" / "runs" / name
        assert (par / "predictions_val.parquet").is_file() and (par / "curves.png").is_file()
        assert comparable(read_json(par / "metrics.json")) == \
            comparable(read_json(tmp_path / "jobs1" / "runs" / name / "metrics.json")), name


def test_killed_forked_worker_fails_only_its_run_and_is_retried(synth, tmp_path):
    grid = {**GRID, "axes": {"seeds": list(range(6))}}
    got = fresh_grid(synth, tmp_path, grid, runner="kill_first_in_worker")
    assert got["method"] == "fork"
    failed = [o for o in got["outcomes"] if o[1] != "ok"]
    assert len(failed) == 1 and failed[0][2].startswith("WorkerDied"), got["outcomes"]
    again = run_grid(build_runs(grid_from_dict(grid), *synth), tmp_path, jobs=1, runner=kill_first_in_worker, **QUIET)
    assert [o.name for o in again.ran] == [failed[0][0]] and again.count("ok") == 1 and again.count("skipped") == 5


def test_a_process_running_polars_spawns_its_workers(synth, tmp_path):
    import polars as pl

    pl.DataFrame({"a": [1, 2, 3]}).lazy().filter(pl.col("a") > 1).select(pl.col("a").sum()).collect()
    assert "polars" in (fork_refusal() or "")
    console = Console(record=True, width=200)
    runs = build_runs(grid_from_dict({**GRID, "axes": {"seeds": [0, 1, 2]}}), *synth)
    res = run_grid(runs, tmp_path, jobs=2, threads=1, runner=quick_runner, console=console, progress=False)
    assert res.start_method == "spawn" and res.count("ok") == 3
    assert "workers spawned, not forked: polars' thread pool" in console.export_text()
