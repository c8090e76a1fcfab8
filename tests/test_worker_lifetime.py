"""`ablate --jobs 2` workers die with their parent: SIGKILL the command mid-grid and no worker survives."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _is_worker(pid: int, parent: int) -> bool:
    """A spawned pool worker (multiprocessing's spawn_main) or a forked one (its parent's command line)."""
    cmd = Path(f"/proc/{pid}/cmdline").read_text()
    return "spawn_main" in cmd or cmd == Path(f"/proc/{parent}/cmdline").read_text()


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def test_killed_ablate_leaves_no_workers(tmp_path):
    cache, labels = make_synthetic(tmp_path / "s", n_videos=4, n_frames=200, dims=(16, 12))
    grid = tmp_path / "g.toml"
    grid.write_text('[base]\ntask = "expr"\nfeatures = ["%s", "%s"]\nepochs = 100000\npatience = 100000\nwindow = 16\n'
                    'plots = false\ndevice = "cpu"\n[axes]\nlr = [1e-3, 2e-3, 3e-3]\nseeds = [0]\n' % (VISUAL, AUDIO))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "affcli", "ablate", str(grid), "--cache", str(cache), "--labels",
                             str(labels), "--out", str(out), "--jobs", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        started = _wait(lambda: len(list((out / "runs").glob("*/ablate.json"))) >= 2 or proc.poll() is not None, 180)
        assert started and proc.poll() is None, "the grid did not start two runs"
        workers = [p for p in _children(proc.pid) if _is_worker(p, proc.pid)]
        assert workers, "no worker process was started"  # on CPU the warm parent runs grid points too
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _wait(lambda: not any(_alive(p) for p in workers), 5), [p for p in workers if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in _children(proc.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
