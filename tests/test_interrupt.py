"""Ctrl-C (SIGINT) during `extract` (issue 20, part B): exit 130 with one line, every thread joined (no
`terminate called without an active exception`), and a consistent cache: complete videos stay, the interrupted one
is not marked complete and a rerun redoes only it.

Classes, each a real `affcli extract` child process sent SIGINT mid-run: videos (after some are written), a frame
folder (twice, quickly: the second Ctrl-C exits at once) and still images (after a folder is written).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from affcli.cache.store import FeatureStore
from affcli.cli import app
from affcli.pipeline.config import ExtractConfig
from affcli.pipeline.extract import run_extract
from affcli.synthetic.media import write_test_video

CLIP = "clip:tiny"
ARGS = ["-b", CLIP, "--device", "cpu", "--face", "none", "--batch-size", "16", "--decode-workers", "1"]


def _complete(cache: Path) -> list[str]:
    try:
        return FeatureStore(cache, mode="r").videos(CLIP)
    except Exception:  # noqa: BLE001 - not created yet, or being created
        return []


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C's default action, even when the tests run where SIGINT is ignored (a
    background job of a non-interactive shell, `nohup`), which the child would inherit and keep."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(cache: Path, inputs: list[str], ready, signals: int = 1) -> tuple[int, list[str]]:
    """Run `affcli extract` in a child, send SIGINT `signals` times once `ready()` holds; (exit code, stderr lines)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    p = subprocess.Popen([sys.executable, "-m", "affcli", "extract", "--cache", str(cache), *ARGS, *inputs],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 180
    while not ready() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be interrupted: make its input longer"
    for _ in range(signals):
        p.send_signal(signal.SIGINT)
        time.sleep(0.05)
    _, err = p.communicate(timeout=120)
    return p.returncode, [ln for ln in err.splitlines() if ln.strip()]


def _check_line(code: int, err: list[str]) -> str:
    assert code == 130, err
    text = "\n".join(err)
    assert "terminate called" not in text and "Traceback" not in text and "Aborted" not in text, text
    said = [ln for ln in err if "interrupted" in ln]
    assert len(said) == 1, text
    return said[0]


def _verify(cache: Path) -> None:
    r = CliRunner().invoke(app, ["cache", "verify", str(cache)])
    assert r.exit_code == 0, r.output


def test_sigint_during_videos_keeps_the_written_ones_and_resumes(tmp_path):
    vids = tmp_path / "videos"
    for name, n in (("a", 8), ("b", 8), ("z", 900)):
        write_test_video(vids / f"{name}.mp4", n, 25.0, (32, 24), picture="noise", seed=len(name) + n)
    cache = tmp_path / "c.zarr"
    code, err = _interrupt(cache, ["--video-dir", str(vids)], lambda: len(_complete(cache)) >= 2)
    line = _check_line(code, err)
    assert "2 videos written complete; not complete: z; run the same command again to resume" in line, line
    assert _complete(cache) == ["a", "b"]
    _verify(cache)
    res = run_extract(ExtractConfig(cache=str(cache), backbones=[CLIP], video_dir=vids, device="cpu", face="none",
                                    batch_size=16))
    assert [(r.video_id, r.status) for r in res] == [("a", "skipped"), ("b", "skipped"), ("z", "ok")]
    assert FeatureStore(cache, mode="r").read_video(CLIP, "z").feats.shape[0] == 900
    _verify(cache)


def test_two_sigints_during_a_frame_folder_exit_at_once_and_leave_it_incomplete(tmp_path):
    folder = tmp_path / "crops" / "long"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 801):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    cache = tmp_path / "c.zarr"
    code, err = _interrupt(cache, ["--frames-dir", str(tmp_path / "crops")],
                           lambda: (cache / "zarr.json").is_file() and time.sleep(0.3) is None, signals=2)
    assert code == 130 and not any("terminate called" in ln or "Traceback" in ln for ln in err), err
    assert _complete(cache) == []
    r = CliRunner().invoke(app, ["cache", "verify", str(cache)])  # at most the one incomplete video, named
    problems = [ln for ln in r.output.splitlines() if ln.startswith("problem:")]
    assert r.exit_code == 0 or problems == [f"problem: {CLIP}/long: incomplete video (interrupted write); re-run "
                                            f"extract to finish it"], r.output


def test_sigint_during_still_images_keeps_the_written_folders(tmp_path):
    tree = tmp_path / "tree"
    rng = np.random.default_rng(1)
    for folder, n in (("a", 4), ("b", 4), ("c", 2000)):
        (tree / folder).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(tree / folder / f"{i:04d}.png"), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    cache = tmp_path / "c.zarr"
    code, err = _interrupt(cache, ["--images-dir", str(tree)], lambda: len(_complete(cache)) >= 2)
    line = _check_line(code, err)
    assert "2 videos written complete; not complete: c" in line, line
    assert _complete(cache) == ["a", "b"]
    _verify(cache)


def test_wind_down_joins_every_stage_thread(tmp_path, monkeypatch):
    """In-process: a KeyboardInterrupt in the main loop leaves no stage thread running (the abort's cause)."""
    import threading

    import affcli.pipeline.extract as ex

    vids = tmp_path / "videos"
    write_test_video(vids / "a.mp4", 40, 25.0, (32, 24), picture="noise")
    cfg = ExtractConfig(cache=str(tmp_path / "c.zarr"), backbones=[CLIP], video_dir=vids, device="cpu",
                        face="none", batch_size=8)
    before = set(threading.enumerate())
    feed = ex.Embedder.feed
    calls = []

    def boom(self, msg):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return feed(self, msg)

    monkeypatch.setattr(ex.Embedder, "feed", boom)
    with pytest.raises(KeyboardInterrupt) as e:
        run_extract(cfg)
    assert isinstance(e.value, ex.Interrupted) and e.value.left == ["a"]
    stages = ("(_writer)", "(_decode_all)", "(_pump)", "(work)")
    assert [t for t in threading.enumerate() if t not in before and t.name.endswith(stages)] == []
