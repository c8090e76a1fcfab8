"""Shared helpers of common/: safetensors checkpoints with metadata, autocast, the progress bar."""
from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console

from affcli.common.checkpoint import CheckpointError, load_weights, read_checkpoint, write_checkpoint
from affcli.common.device import autocast
from affcli.common.progress import progress_bar


def test_checkpoint_roundtrip_keeps_tensors_and_json_metadata(tmp_path):
    t = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    path = write_checkpoint(tmp_path / "sub" / "m.safetensors", t, spec={"name": "x", "dims": [1, 2]}, note="hi")
    meta, got = read_checkpoint(path, "spec", "note")
    assert meta == {"spec": {"name": "x", "dims": [1, 2]}, "note": "hi"}
    assert torch.equal(got["w"], t["w"]) and torch.equal(got["b"], t["b"])
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]


def test_checkpoint_metadata_is_plain_json_strings(tmp_path):
    from safetensors import safe_open

    path = write_checkpoint(tmp_path / "m.safetensors", {"w": torch.zeros(1)}, model_spec={"a": 1})
    with safe_open(str(path), "pt") as fh:
        assert json.loads(fh.metadata()["model_spec"]) == {"a": 1}


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_unreadable_checkpoint_is_one_line_error(tmp_path, content):
    path = tmp_path / "m.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path, "spec")
    assert str(e.value).startswith(f"{path}: unreadable checkpoint") and "\n" not in str(e.value)


def test_truncated_checkpoint_is_one_line_error(tmp_path):
    path = write_checkpoint(tmp_path / "m.safetensors", {"w": torch.randn(1000)}, spec={})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="unreadable checkpoint") as e:
        read_checkpoint(path, "spec")
    assert "\n" not in str(e.value)


def test_missing_metadata_key_names_it(tmp_path):
    path = write_checkpoint(tmp_path / "m.safetensors", {"w": torch.zeros(1)}, other=1)
    with pytest.raises(CheckpointError, match="no spec in its metadata"):
        read_checkpoint(path, "spec")


def test_load_weights_mismatch_is_one_line(tmp_path):
    good = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match="weights do not fit") as e:
        load_weights(torch.nn.Linear(4, 2), good.state_dict(), tmp_path / "m.safetensors")
    assert "\n" not in str(e.value)
    other = torch.nn.Linear(3, 2)
    load_weights(other, good.state_dict(), "m")
    assert torch.equal(other.weight, good.weight)


def test_autocast_is_a_noop_on_cpu_and_when_disabled():
    x = torch.randn(4, 4)
    for ctx in (autocast(torch.device("cpu")), autocast(torch.device("cuda"), enabled=False)):
        with ctx:
            assert (x @ x).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_lowers_matmul_precision_on_cuda():
    x = torch.randn(4, 4, device="cuda")
    with autocast(x.device):
        assert (x @ x).dtype in (torch.bfloat16, torch.float16)


def test_progress_bar_shows_count_unit_and_info():
    buf = io.StringIO()
    with progress_bar("runs", console=Console(file=buf, width=120, force_terminal=False)) as bar:
        t = bar.add_task("ablate", total=4)
        bar.advance(t, 3)
        bar.update(t, info="loss 0.5")
        bar.refresh()
        no_info = bar.add_task("other", total=2)
        bar.advance(no_info)
    out = buf.getvalue()
    assert "ablate" in out and "3/4 runs" in out and "loss 0.5" in out and "1/2 runs" in out
