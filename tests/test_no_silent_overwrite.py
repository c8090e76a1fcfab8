"""Nothing dropped or overwritten silently: run folders need --overwrite (which clears the old run), labelled videos
missing from the cache are named in one warning line, `load_table` never returns a video marked incomplete, reserved
or unusable names never reach the store and a refused import leaves no trace, exports never write over a device or a
folder, predict refuses a file as its --out."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affcli.cache import load_table
from affcli.cache.errors import BadVideo, CacheError
from affcli.cache.h5io import export_h5, import_h5
from affcli.cache.store import FeatureStore, safe_key
from affcli.cli import app
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

torch.set_num_threads(1)
TRAIN = ["--epochs", "1", "--d-model", "8", "--window", "8", "--device", "cpu", "-f", VISUAL]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("drops"), n_videos=6, n_frames=40, dims=(8, 8))


@pytest.fixture
def synth(base, tmp_path) -> tuple[Path, Path]:
    """A private copy of the module's cache and labels (tests here damage them)."""
    shutil.copytree(base[0].parent, tmp_path / "s")
    return tmp_path / "s" / "cache.zarr", tmp_path / "s" / "labels"


@pytest.fixture(scope="module")
def finished_run(base, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "done"
    r = CliRunner().invoke(app, ["train-head", "--cache", str(base[0]), "--labels", str(base[1]), *TRAIN,
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {"curves.png", "confusion.png", "model.safetensors"} <= {p.name for p in out.iterdir()}
    return out


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line(r, code: int = 2) -> str:
    assert r.exit_code == code, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


# ---- run folders -----------------------------------------------------------------------------------------------

def _holding(kind: str, finished_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / kind
    if kind == "finished":
        shutil.copytree(finished_run, out)
    elif kind == "pretrain":
        out.mkdir()
        for n in ("config.json", "encoder.safetensors", "metrics.json"):
            (out / n).write_text("{}")
    elif kind == "config-only":
        out.mkdir()
        (out / "config.json").write_text("{}")
    elif kind == "interrupted":
        out.mkdir()
        (out / "config.json").write_text("{}")
        (out / "interrupted.json").write_text("{}")
    elif kind == "a-file":
        out.write_text("not a folder")
    elif kind == "ablation":
        out.mkdir()
        (out / "grid.json").write_text("{}")
    return out


@pytest.mark.parametrize("kind", ["finished", "pretrain", "config-only", "interrupted", "a-file", "ablation"])
def test_an_out_holding_a_run_is_refused_and_left_as_it_was(kind, base, finished_run, tmp_path):
    out = _holding(kind, finished_run, tmp_path)
    before = _snapshot(out) if out.is_dir() else out.read_bytes()
    for args in (["train-head", "--cache", str(base[0]), "--labels", str(base[1]), *TRAIN],
                 ["pretrain", "--cache", str(base[0]), "--epochs", "1", "--d-model", "8", "--window", "8",
                  "--device", "cpu"]):
        line = _one_line(CliRunner().invoke(app, [*args, "--out", str(out)]))
        assert str(out) in line and ("--overwrite" in line or "not a folder" in line or "ablation" in line), line
    assert (_snapshot(out) if out.is_dir() else out.read_bytes()) == before


def test_overwrite_replaces_the_run_and_clears_its_old_files(base, finished_run, tmp_path):
    out = _holding("finished", finished_run, tmp_path)
    (out / "eval_val.json").write_text("{}")
    (out / "notes.txt").write_text("mine")  # not a run file: kept
    r = CliRunner().invoke(app, ["train-head", "--cache", str(base[0]), "--labels", str(base[1]), *TRAIN,
                                 "--no-plots", "--seed", "3", "--out", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    assert not names & {"curves.png", "confusion.png", "eval_val.json"}, names
    assert {"config.json", "metrics.json", "model.safetensors", "notes.txt"} <= names
    assert json.loads((out / "config.json").read_text())["seed"] == 3


def test_a_refused_overwrite_keeps_the_old_run(base, finished_run, tmp_path):
    out = _holding("finished", finished_run, tmp_path)
    before = _snapshot(out)
    r = CliRunner().invoke(app, ["train-head", "--cache", str(base[0]), "--labels", str(base[1]), *TRAIN,
                                 "--temporal", "tcn(levels=0)", "--out", str(out), "--overwrite"])
    _one_line(r)
    assert _snapshot(out) == before


# ---- labelled videos missing from the cache -------------------------------------------------------------------

def _drop(cache: Path, video: str, how: str) -> None:
    for spec in (VISUAL, AUDIO):
        g = cache / safe_key(spec) / video
        if how == "absent":
            shutil.rmtree(g)
        else:
            p = g / "zarr.json"
            d = json.loads(p.read_text())
            d["attributes"]["complete"] = False
            p.write_text(json.dumps(d))


@pytest.mark.parametrize("drops", [{"video000": "absent"}, {"video001": "incomplete"},
                                   {"video000": "absent", "video002": "incomplete"}])
def test_labelled_videos_missing_from_the_cache_are_one_warning_line(drops, synth, tmp_path):
    cache, labels = synth
    for v, how in drops.items():
        _drop(cache, v, how)
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), *TRAIN,
                                 "--no-plots", "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    warned = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1, r.output
    assert f"{len(drops)} of 4 labelled train videos" in warned[0]
    for v, how in drops.items():
        assert (f"{v} (incomplete)" if how == "incomplete" else v) in warned[0]


def test_a_split_left_empty_is_an_error(synth, tmp_path):
    cache, labels = synth
    for v in ("video004", "video005"):
        _drop(cache, v, "absent")
    line = _one_line(CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), *TRAIN,
                                              "--out", str(tmp_path / "r")]))
    assert "none of the 2 labelled val videos" in line


@pytest.mark.parametrize("videos", [None, ["video001"], ["video000", "video001"]])
def test_load_table_never_returns_a_video_marked_incomplete(videos, synth):
    cache, _ = synth
    _drop(cache, "video001", "incomplete")  # data intact, manifest still lists it as ok
    with pytest.raises(BadVideo, match="video001.*incomplete"):
        load_table(cache, [VISUAL, AUDIO], videos=videos)
    if videos != ["video001"]:  # with --skip-bad it is left out (with a warning line), the others load
        assert "video001" not in load_table(cache, [VISUAL, AUDIO], videos=videos, skip_bad=True).videos
    (cache / "manifest.parquet").unlink()  # without a manifest: not listed at all
    if videos is None:
        assert "video001" not in load_table(cache, [VISUAL]).videos
    else:
        with pytest.raises(CacheError, match="lacks"):
            load_table(cache, [VISUAL], videos=videos)


# ---- import-h5: reserved and unusable names, nothing half imported ---------------------------------------------

def _foreign(path: Path, names: list[str], dim: int = 4, n: int = 5, bad: str | None = None) -> Path:
    with h5py.File(path, "w") as f:
        for i, name in enumerate(names):
            x = np.ones((n, dim), np.float32) * i
            f.create_dataset(name, data=x if name != bad else np.ones((n, dim + 1), np.float32))
    return path


@pytest.mark.parametrize("spec", ["teacher", "_text", "_leases", "zarr.json", "manifest.parquet", "Teacher",
                                  "TEXT", "x" * 300, "a\nb", "tab\there"])
def test_import_h5_refuses_reserved_and_unusable_set_names_leaving_no_trace(spec, synth, tmp_path):
    cache, _ = synth
    before = _snapshot(cache)
    h5 = _foreign(tmp_path / "f.h5", ["v1", "v2"])
    line = _one_line(CliRunner().invoke(app, ["cache", "import-h5", str(h5), str(cache), "--spec", spec,
                                              "--modality", "visual"]))
    assert "reserved" in line or "control character" in line or "characters long" in line, line
    assert _snapshot(cache) == before
    new = tmp_path / "new.zarr"  # a refused import into a new path creates nothing
    _one_line(CliRunner().invoke(app, ["cache", "import-h5", str(h5), str(new), "--spec", spec, "--modality", "audio"]))
    assert not new.exists()


@pytest.mark.parametrize("names,bad,problem", [
    (["v1", "y" * 300], None, "characters long"), (["v1", "a\nb"], None, "control character"),
    (["v1", "a\x07"], None, "control character"), (["a b", "a_b"], None, "share one group"),
    (["v1", "v2", "v3"], "v3", "one dim"),
])
def test_import_h5_checks_the_whole_file_before_writing(names, bad, problem, synth, tmp_path):
    cache, _ = synth
    before = _snapshot(cache)
    h5 = _foreign(tmp_path / "f.h5", names, bad=bad)
    line = _one_line(CliRunner().invoke(app, ["cache", "import-h5", str(h5), str(cache), "--spec", "theirs:v1",
                                              "--modality", "visual"]))
    assert problem in line
    assert _snapshot(cache) == before and "theirs:v1" not in FeatureStore(cache, mode="r").feature_sets()


def test_a_failed_write_is_undone(synth, tmp_path):
    cache, _ = synth
    out = export_h5(cache, tmp_path / "x.h5", [VISUAL])
    with h5py.File(out, "a") as f:
        g = f[safe_key(VISUAL)]
        g.move(safe_key("video003"), "zz_last")  # written last
        f[f"{safe_key(VISUAL)}/zz_last/feats"][0, 0] = np.nan
    other = tmp_path / "other.zarr"
    with pytest.raises(CacheError, match="NaN"):
        import_h5(out, other)
    store = FeatureStore(other, mode="r")
    assert store.feature_sets() == [] and not (other / safe_key(VISUAL)).exists()


# ---- export-h5 never writes over what is not its file ----------------------------------------------------------

@pytest.mark.parametrize("target", ["/dev/null", "folder", "missing-parent", "existing-file", "dangling-link"])
def test_export_h5_refuses_non_files_and_leaves_no_temp(target, synth, tmp_path):
    cache, _ = synth
    out = {"/dev/null": Path("/dev/null"), "folder": tmp_path / "d", "missing-parent": tmp_path / "no" / "x.h5",
           "existing-file": tmp_path / "x.h5", "dangling-link": tmp_path / "l.h5"}[target]
    if target == "folder":
        out.mkdir()
    elif target == "existing-file":
        out.write_bytes(b"keep me")
    elif target == "dangling-link":
        out.symlink_to(tmp_path / "nowhere")
    before = sorted(os.listdir(tmp_path))
    line = _one_line(CliRunner().invoke(app, ["cache", "export-h5", str(cache), str(out)]))
    assert str(out) in line
    assert sorted(os.listdir(tmp_path)) == before
    if target == "existing-file":
        assert out.read_bytes() == b"keep me"
        r = CliRunner().invoke(app, ["cache", "export-h5", str(cache), str(out), "--overwrite"])
        assert r.exit_code == 0 and h5py.is_hdf5(out)


def test_a_failed_export_removes_its_temporary_file(synth, tmp_path):
    cache, _ = synth
    shard = cache / safe_key(VISUAL) / "video002" / "feats" / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    line = _one_line(CliRunner().invoke(app, ["cache", "export-h5", str(cache), str(tmp_path / "x.h5")]))
    assert "video002" in line
    assert os.listdir(tmp_path) == ["s"]


# ---- predict --out ----------------------------------------------------------------------------------------------

def test_predict_refuses_a_file_as_its_out(finished_run, tmp_path):
    out = tmp_path / "preds"
    out.write_text("a file")
    line = _one_line(CliRunner().invoke(app, ["predict", "--run", str(finished_run), "--out", str(out)]))
    assert "not a folder" in line and out.read_text() == "a file"
