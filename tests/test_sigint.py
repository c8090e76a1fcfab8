"""SIGINT (Ctrl-C) of a long heads command exits 130 with one line and leaves its outputs consistent: a run folder is
finished or marked interrupted, never a half-written checkpoint; predict's files are each whole; cache teacher keeps
the videos it completed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from affcli.cli import app
from affcli.synthetic.features import VISUAL, make_synthetic

LONG = ["--epochs", "100000", "--patience", "100000", "--d-model", "8", "--window", "8", "--device", "cpu",
        "--no-plots", "-f", VISUAL]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("sigint"), n_videos=4, n_frames=40, dims=(8, 8))


def _interrupt_when(args: list[str], ready: Path, tmp_path: Path) -> tuple[int, list[str]]:
    """Run `affcli ARGS` in a subprocess, send it SIGINT once `ready` exists, return (exit status, output lines)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    log = tmp_path / "out.log"
    with open(log, "w") as fh:
        p = subprocess.Popen([sys.executable, "-m", "affcli", *args], stdout=fh, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while not ready.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if not ready.exists():
            p.kill()
            pytest.fail(f"{ready} never appeared: {log.read_text()[-2000:]}")
        assert p.poll() is None, log.read_text()
        time.sleep(0.5)  # inside the training loop
        p.send_signal(signal.SIGINT)
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail("no exit within 60 s of SIGINT")
    return rc, [line for line in log.read_text().splitlines() if line.strip()]


def test_train_head_interrupted_exits_130_and_marks_its_run(synth, tmp_path):
    out = tmp_path / "run"
    rc, lines = _interrupt_when(["train-head", "--cache", str(synth[0]), "--labels", str(synth[1]), *LONG,
                                 "--out", str(out)], out / "config.json", tmp_path)
    assert rc == 130, lines
    said = [line for line in lines if line.startswith("interrupted:")]
    assert len(said) == 1 and "marked interrupted" in said[0] and not any("Traceback" in x for x in lines), lines
    names = {p.name for p in out.iterdir()}
    assert "interrupted.json" in names and "metrics.json" not in names and "model.safetensors" not in names, names
    assert not [n for n in names if ".tmp" in n], names
    r = CliRunner().invoke(app, ["train-head", "--cache", str(synth[0]), "--labels", str(synth[1]), "--epochs", "1",
                                 "--d-model", "8", "--window", "8", "--device", "cpu", "-f", VISUAL,
                                 "--out", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.output  # an interrupted run is not taken as finished or empty


def test_ablate_interrupted_exits_130_and_its_run_is_redone(synth, tmp_path):
    from affcli.heads.ablate.report import run_status

    grid = tmp_path / "g.toml"
    grid.write_text('[base]\ntask = "expr"\nepochs = 100000\npatience = 100000\nd_model = 8\nwindow = 8\n'
                    f'device = "cpu"\nplots = false\nfeatures = ["{VISUAL}"]\n[axes]\nseed = [0, 1]\n')
    out = tmp_path / "abl"
    rc, lines = _interrupt_when(["ablate", str(grid), "--cache", str(synth[0]), "--labels", str(synth[1]),
                                 "--out", str(out)], out / "runs" / "seed0" / "config.json", tmp_path)
    assert rc == 130, lines
    said = [line for line in lines if line.startswith("interrupted:")]
    assert len(said) == 1 and not any("Traceback" in x for x in lines), lines
    run = out / "runs" / "seed0"
    assert (run / "interrupted.json").exists() and not (run / "model.safetensors").exists()
    meta = json.loads((run / "ablate.json").read_text())
    assert meta["finished"] is False and run_status(run, meta["hash"]) == "pending"  # re-run next time


def test_predict_and_cache_teacher_interrupted_exit_130(synth, tmp_path, monkeypatch):
    from affcli.heads.infer.runs import RunView
    from affcli.heads.train import teacher as teacher_mod

    run = tmp_path / "r"
    r = CliRunner().invoke(app, ["train-head", "--cache", str(synth[0]), "--labels", str(synth[1]), "--epochs", "1",
                                 "--d-model", "8", "--window", "8", "--device", "cpu", "--no-plots", "-f", VISUAL,
                                 "--out", str(run)])
    assert r.exit_code == 0, r.output

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunView, "video_outputs", stop)
    r = CliRunner().invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "p")])
    assert r.exit_code == 130 and r.output.strip().startswith("interrupted: predict") and \
        len(r.output.strip().splitlines()) == 1, r.output
    monkeypatch.setattr(teacher_mod, "cache_teachers", stop)
    r = CliRunner().invoke(app, ["cache", "teacher", str(synth[0]), "--run", str(run)])
    assert r.exit_code == 130 and r.output.strip().startswith("interrupted: cache teacher"), r.output
    from affcli.heads.train import pretrain_run

    monkeypatch.setattr(pretrain_run, "run_pretrain", stop)
    r = CliRunner().invoke(app, ["pretrain", "--cache", str(synth[0]), "--out", str(tmp_path / "pre"),
                                 "--device", "cpu"])
    assert r.exit_code == 130 and r.output.strip().startswith("interrupted: pretrain"), r.output
    assert not (tmp_path / "pre").exists()


def test_an_interrupt_that_library_code_swallows_still_stops_the_command():
    """SIGINT landing in code that swallows KeyboardInterrupt (a bare `except:` in a lazy import) still stops the
    command at its next step (check_interrupt), with exit 130 and one line."""
    code = """
import os, signal, sys, time
from affcli.common.commands import interrupted
from affcli.common.interrupts import catching_sigint, check_interrupt
with catching_sigint():
    try:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except BaseException:
            pass
        check_interrupt()
        time.sleep(5)
    except KeyboardInterrupt:
        sys.exit(interrupted("test stopped"))
sys.exit(0)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 130 and r.stderr.strip() == "interrupted: test stopped", (r.returncode, r.stderr)


def test_an_interrupt_through_a_string_exec_still_exits_130(tmp_path):
    """A KeyboardInterrupt that passed through a string `exec` (dataclass creation in a lazy import) marks the
    process as interrupted in CPython; run as `python -m`, a handled one must still exit 130, not by SIGINT."""
    (tmp_path / "stopper.py").write_text("""
import os, signal, sys, time
from affcli.common.commands import interrupted
from affcli.common.interrupts import catching_sigint
with catching_sigint():
    try:
        exec("os.kill(os.getpid(), signal.SIGINT); time.sleep(5)")
    except KeyboardInterrupt:
        sys.exit(interrupted("test stopped"))
sys.exit(0)
""")
    r = subprocess.run([sys.executable, "-m", "stopper"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 130 and r.stderr.strip() == "interrupted: test stopped", (r.returncode, r.stderr)
