"""Shared fixtures. Media fixtures (owner: media layer) write tiny videos once per test session."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from affcli.synthetic.media import click_track, write_test_video

CLICK_AT = 1.25
CLICK_FPS = 30000 / 1001


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the session's media fixtures."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def click_video(media_dir: Path) -> Path:
    """160x120 face video, 60 frames at 29.97 fps, 16 kHz audio with one click at CLICK_AT seconds."""
    seconds = 60 / CLICK_FPS
    return write_test_video(media_dir / "click.mp4", 60, CLICK_FPS, (160, 120), audio=click_track(seconds, CLICK_AT))


@pytest.fixture(scope="session")
def silent_video(media_dir: Path) -> Path:
    """64x64 noise video without an audio stream, 30 frames at 25 fps."""
    return write_test_video(media_dir / "noaudio.mp4", 30, 25.0, (64, 64), picture="noise")


SHARED_PC = Path(os.environ.get("AFFCLI_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared")) / "data" / "pointcloud"


@pytest.fixture(scope="session")
def shared_pc() -> Path:
    """The shared point-cloud data (../shared or $AFFCLI_SHARED); missing, it skips locally but fails under CI=true."""
    if not SHARED_PC.is_dir():
        msg = f"shared point-cloud data not found at {SHARED_PC} (check out ../shared or set AFFCLI_SHARED)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI: {msg}", pytrace=False)
        pytest.skip(msg)
    return SHARED_PC


S3_BUCKET = "affcli-test"


@pytest.fixture(scope="session")
def s3_server():
    """One moto S3 server on 127.0.0.1 for the session (bucket S3_BUCKET made); AWS_* point every client (s3fs,
    subprocesses) at it with dummy keys; yields an s3fs filesystem."""
    pytest.importorskip("s3fs", reason="s3fs is a dependency: pip install -e .")
    import fsspec
    import s3fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(S3_BUCKET)
    yield fs
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


MLFLOW_FIXTURE = "mlflow_server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the MLflow test's server as soon as the test is collected (its start-up, ~25 s on 2 cores, then overlaps
    the tests before it); the `mlflow_server` fixture waits for it, the session's end stops it."""
    import importlib.util
    import subprocess
    import sys
    import tempfile

    if not any(MLFLOW_FIXTURE in getattr(i, "fixturenames", ()) for i in session.items):
        return
    if importlib.util.find_spec("mlflow") is None:
        return
    root = Path(tempfile.mkdtemp(prefix="affcli-mlflow-"))
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    session.config._mlflow_server = (proc, f"http://127.0.0.1:{port}", root, log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the MLflow server (its whole process group) and remove its folder."""
    import shutil
    import signal
    import subprocess

    started = getattr(session.config, "_mlflow_server", None)
    if started is None:
        return
    proc, _, root, log = started
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    log.close()
    shutil.rmtree(root, ignore_errors=True)
