"""`affcli ablate GRID --search optuna --trials N`: a 12-trial search killed with SIGKILL mid-way resumes to 12
trials and writes the tables and both plots; bad search spaces are refused before any trial; a range axis without
--search is refused while a plain grid runs as before."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import polars as pl
import pytest
from typer.testing import CliRunner

from affcli.cli import app
from affcli.common.runs import read_json
from affcli.heads.ablate.search import DB_FILE, HISTORY_PNG, IMPORTANCE_PNG, KILLED, STUDY, TRIALS_CSV
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

GRID = """[base]
task = "expr"
features = ["%s", "%s"]
epochs = 2
warmup = 0
device = "cpu"
stride = 16
batch_size = 32
plots = false
save_predictions = false
tensorboard = false

[axes]
lr = {log = [1e-4, 1e-1]}
window = {int = [8, 24], step = 8}
d_model = [8, 16]
""" % (VISUAL, AUDIO)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("search"), n_videos=4, n_frames=64, dims=(8, 6))


def _finished(out: Path) -> int:
    runs = out / "runs"
    return sum(1 for p in runs.glob("t*/ablate.json") if json.loads(p.read_text()).get("finished")) \
        if runs.is_dir() else 0


def test_killed_search_resumes_to_twelve_trials(synth, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    out = tmp_path / "out"
    args = ["ablate", str(grid), "--cache", str(synth[0]), "--labels", str(synth[1]), "--out", str(out),
            "--search", "optuna", "--trials", "12"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "affcli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 240
        while _finished(out) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the search ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / DB_FILE}")
    before = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    assert 3 <= len(before) < 12

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / DB_FILE}")
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")
               or (t.state.name == "FAIL" and not t.user_attrs.get(KILLED))]
    assert len(counted) == 12, [(t.number, t.state.name) for t in trials]
    assert all(t.state.is_finished() for t in trials), "no trial left running"
    killed = [t for t in trials if t.user_attrs.get(KILLED)]
    for t in killed:
        assert not list((out / "runs").glob(f"t{t.number:04d}__*")), "a killed trial's half run is removed"
    for name in (HISTORY_PNG, IMPORTANCE_PNG, "ablation.png"):
        assert (out / name).stat().st_size > 1000, name
    assert pl.read_csv(out / TRIALS_CSV).height == len(trials)
    g = read_json(out / "grid.json")
    assert g["axes"] == ["trial", "lr", "window", "d_model"] and len(g["runs"]) == 12
    table = (out / "ablation.md").read_text()
    assert "trial" in table and "lr" in table and "window" in table
    assert "12 trials finished or pruned" in res.output


@pytest.mark.parametrize("axes,extra,needle", [
    ('lr = {log = [0, 1]}', "", "bounds must be > 0"),
    ('window = {int = [8.5, 24]}', "", "bounds must be integers"),
    ('lr = {log = [1e-2, 1e-4]}', "", "low must be below high"),
    ('lr = {log = [1e-4, 1e-2], step = 1}', "", "log ranges take none"),
    ('window = {int = [0, 8]}', "", "window must be >= 1"),
    ('temporal = ["tcn", "lstm"]', "", "unknown temporal"),
    ('lr = {log = [1e-4, 1e-2]}', '[[exclude]]\nlr = 1e-3\n', "exclude/include rules are for grids"),
])
def test_bad_search_space_refused_before_any_trial(synth, tmp_path, axes, extra, needle):
    grid = tmp_path / "g.toml"
    grid.write_text('[base]\ntask = "expr"\nepochs = 1\n[axes]\n' + axes + "\n" + extra)
    res = CliRunner().invoke(app, ["ablate", str(grid), "--cache", str(synth[0]), "--labels", str(synth[1]),
                                   "--out", str(tmp_path / "out"), "--search", "optuna", "--trials", "2"])
    assert res.exit_code == 2 and needle in res.output, res.output
    assert not (tmp_path / "out" / DB_FILE).exists()


def test_range_axis_needs_search_and_plain_grid_is_unchanged(synth, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('[base]\ntask = "expr"\nepochs = 1\n[axes]\nlr = {log = [1e-4, 1e-2]}\n')
    res = CliRunner().invoke(app, ["ablate", str(grid), "--cache", str(synth[0]), "--labels", str(synth[1]),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "needs --search optuna" in res.output, res.output
    grid.write_text('[base]\ntask = "expr"\nepochs = 1\nwindow = 16\ndevice = "cpu"\nplots = false\n'
                    '[axes]\nfusion = ["none:visual"]\nseeds = [0]\n')
    res = CliRunner().invoke(app, ["ablate", str(grid), "--cache", str(synth[0]), "--labels", str(synth[1]),
                                   "--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "plain" / DB_FILE).exists() and not (tmp_path / "plain" / HISTORY_PNG).exists()
    assert "search" not in read_json(tmp_path / "plain" / "grid.json")
    assert sorted(p.name for p in (tmp_path / "plain" / "runs").iterdir()) == ["none-visual__seed0"]
