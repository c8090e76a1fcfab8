"""No silent drops: a header-only label file leaves its video out with a warning line naming the file; a split of
only header-only files is a one-line error."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from affcli.cli import app
from affcli.heads.errors import LabelError
from affcli.heads.data.labels import load_labels
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

torch.set_num_threads(1)


@pytest.fixture
def synth(tmp_path) -> tuple[Path, Path]:
    return make_synthetic(tmp_path / "s", n_videos=6, n_frames=60, dims=(12, 8))


def _header_only(labels: Path, video: str) -> Path:
    path = next(labels.rglob(f"{video}.txt"))
    path.write_text(path.read_text().splitlines()[0] + "\n")
    return path


def test_header_only_file_warns_and_is_left_out(synth, capsys):
    _, labels = synth
    path = _header_only(labels, "video001")
    df = load_labels(labels, "expr", "train")
    assert "video001" not in set(df["video"].to_list()) and df["video"].n_unique() == 3
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("warning:") and str(path) in err[0] and "1 of 1" in err[0]


def test_train_head_names_the_dropped_file(synth, tmp_path):
    cache, labels = synth
    path = _header_only(labels, "video002")
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "-f", VISUAL, "-f", AUDIO,
                                 "--epochs", "1", "--window", "8", "--d-model", "8", "--device", "cpu", "--no-plots",
                                 "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    warned = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and str(path) in warned[0] and "'video002'" in warned[0]


def test_all_header_only_is_an_error(synth, tmp_path):
    cache, labels = synth
    for v in ("video004", "video005"):
        _header_only(labels, v)
    with pytest.raises(LabelError, match="every val label file holds only the expr header"):
        load_labels(labels, "expr", "val")
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "-f", VISUAL,
                                 "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Validation_Set" in lines[0] and "header" in lines[0]
