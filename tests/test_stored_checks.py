"""Every stored thing is checked: the cache's format version (readers and writers refuse an unknown one), prompt
embeddings (a checksum that reads and `verify` check; legacy sets without one still read), teacher targets, and
manifest.parquet (verify names a truncated, junk or stale one; --rebuild-manifest mends it)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affcli.cache import load_table
from affcli.cache.errors import CacheError
from affcli.cache.store import FeatureStore, safe_key
from affcli.cache.teacher import open_targets, read_targets
from affcli.cache.verify import verify
from affcli.cli import app
from affcli.synthetic.features import VISUAL, make_synthetic

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("stored"), n_videos=4, n_frames=30, dims=(8, 8))


@pytest.fixture
def synth(base, tmp_path) -> tuple[Path, Path]:
    shutil.copytree(base[0].parent, tmp_path / "s")
    return tmp_path / "s" / "cache.zarr", tmp_path / "s" / "labels"


def _one_line(r, code: int = 2) -> str:
    assert r.exit_code == code, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


def _edit_json(path: Path, fn) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


# ---- format version -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [99, "one", 0, "1", 1.5, True, None])
def test_an_unknown_cache_version_is_refused_by_readers_and_writers(version, synth, tmp_path):
    cache, labels = synth
    _edit_json(cache / "zarr.json", lambda d: d["attributes"].update(affcli_cache_version=version))
    before = (cache / "zarr.json").read_bytes()
    import h5py

    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("v1", data=np.ones((5, 4), np.float32))
    for args in (["cache", "ls", str(cache)], ["cache", "verify", str(cache)],
                 ["train-head", "--cache", str(cache), "--labels", str(labels), "--epochs", "1", "--device", "cpu",
                  "--out", str(tmp_path / "r")],
                 ["cache", "import-h5", str(tmp_path / "f.h5"), str(cache), "--spec", "x:v1", "--modality", "audio"]):
        assert "cache format version" in _one_line(CliRunner().invoke(app, args))
    for mode in ("r", "a", "r+"):
        with pytest.raises(CacheError, match=f"cache format version {version!r} is not one this affcli reads"):
            FeatureStore(cache, mode=mode)
    with pytest.raises(CacheError, match="cache format version"):
        load_table(cache, [VISUAL])
    assert (cache / "zarr.json").read_bytes() == before  # nothing written over it
    assert not (tmp_path / "r").exists()


def test_a_new_cache_records_the_version_it_is_read_with(tmp_path):
    FeatureStore(tmp_path / "c.zarr")
    attrs = json.loads((tmp_path / "c.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["affcli_cache_version"] == 1
    FeatureStore(tmp_path / "c.zarr", mode="r")


# ---- prompt embeddings ----------------------------------------------------------------------------------------

def _text_group(cache: Path, name: str = "expr8") -> Path:
    return next(p for p in (cache / "_text").iterdir() if p.name.startswith(name + "_"))


def _flip_emb_value(cache: Path) -> None:
    """Change one embedding value as stored (re-encoded so the chunk still decodes: a silent wrong number)."""
    import zarr

    arr = zarr.open_array(str(_text_group(cache) / "emb"), mode="r+")
    a = arr[:]
    a.view(np.uint32)[1, 2] ^= 1 << 3
    arr[:] = a


@pytest.mark.parametrize("damage", ["value", "chunk-bytes", "prompt-text", "prompt-count", "missing-array"])
def test_damaged_prompt_embeddings_are_caught_by_reads_and_verify(damage, synth, tmp_path):
    cache, labels = synth
    g = _text_group(cache)
    if damage == "value":
        _flip_emb_value(cache)
    elif damage == "chunk-bytes":
        chunk = next(p for p in (g / "emb").rglob("*") if p.is_file() and p.name != "zarr.json")
        b = bytearray(chunk.read_bytes())
        b[len(b) // 2] ^= 0x10
        chunk.write_bytes(bytes(b))
    elif damage == "prompt-text":
        _edit_json(g / "zarr.json", lambda d: d["attributes"]["prompts"].__setitem__(0, "a happy face"))
    elif damage == "prompt-count":
        _edit_json(g / "zarr.json", lambda d: d["attributes"]["prompts"].pop())
    else:
        shutil.rmtree(g / "emb")
    store = FeatureStore(cache, mode="r")
    with pytest.raises(CacheError, match="prompt set expr8@"):
        store.read_text_embeddings("expr8")
    problems = verify(cache)
    assert len(problems) == 1 and problems[0].startswith("text expr8@"), problems
    # a loss that reads the set refuses the run; one that does not trains, with one warning line naming the set
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "--epochs", "1",
                                 "--device", "cpu", "--d-model", "8", "--window", "8", "--no-plots", "-f", VISUAL,
                                 "--loss", "ce+0.1*text-contrastive(prompts=expr8)", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "expr8" in r.output and "Traceback" not in r.output, r.output
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "--epochs", "1",
                                 "--device", "cpu", "--d-model", "8", "--window", "8", "--no-plots", "-f", VISUAL,
                                 "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    warned = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "expr8" in warned[0]


def test_prompt_sets_without_a_checksum_still_read_and_reencoding_adds_one(synth):
    cache, _ = synth
    g = _text_group(cache)
    _edit_json(g / "zarr.json", lambda d: d["attributes"].pop("sha256"))
    store = FeatureStore(cache, mode="r")
    prompts, emb, attrs = store.read_text_embeddings("expr8")
    assert "sha256" not in attrs and emb.shape[0] == len(prompts)
    notes: list[str] = []
    assert verify(cache, notes=notes) == [] and any("expr8" in n and "checksum" in n for n in notes)
    _flip_emb_value(cache)  # unchecked legacy data is read as it is
    FeatureStore(cache).write_text_embeddings("expr8", VISUAL, prompts, emb)
    assert "sha256" in FeatureStore(cache, mode="r").read_text_embeddings("expr8")[2]
    notes.clear()
    assert verify(cache, notes=notes) == [] and notes == []


# ---- teacher targets ------------------------------------------------------------------------------------------

def test_teacher_targets_carry_a_checksum(synth):
    cache, _ = synth
    t = open_targets(cache, {"teacher": "t1"}, run="t1")
    t.write("video000", {"expr": np.full((30, 8), 0.125, np.float32)})
    arr = cache / "teacher" / t.key / "video000" / "expr"
    import zarr

    z = zarr.open_array(str(arr), mode="r+")
    a = z[:]
    a[3, 3] = 0.5
    z[:] = a
    with pytest.raises(CacheError, match="checksum mismatch in expr"):
        read_targets(cache, t.key).read("video000")
    assert any(p.startswith(f"teacher/{t.key}/video000") for p in verify(cache))


# ---- manifest ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "junk", "empty", "stale-row", "wrong-count", "no-columns"])
def test_verify_names_a_damaged_manifest_and_rebuild_mends_it(damage, synth):
    import polars as pl

    cache, _ = synth
    m = cache / "manifest.parquet"
    raw = m.read_bytes()
    if damage == "truncated":
        m.write_bytes(raw[: len(raw) // 2])
    elif damage == "junk":
        m.write_bytes(b"PAR1" + bytes(range(256)) * 4)
    elif damage == "empty":
        m.write_bytes(b"")
    elif damage == "stale-row":
        pl.read_parquet(m).filter(pl.col("video") != "video001").write_parquet(m)
    elif damage == "wrong-count":
        pl.read_parquet(m).with_columns(pl.when(pl.col("video") == "video002").then(7).otherwise(pl.col("n_frames"))
                                        .alias("n_frames")).write_parquet(m)
    else:
        pl.DataFrame({"a": [1]}).write_parquet(m)
    problems = verify(cache)
    assert len(problems) == 1 and problems[0].startswith("manifest.parquet:"), problems
    r = CliRunner().invoke(app, ["cache", "verify", str(cache)])
    assert r.exit_code == 1 and "manifest.parquet" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["cache", "verify", str(cache), "--rebuild-manifest"])
    assert r.exit_code == 0, r.output
    assert verify(cache) == []
    load_table(cache, [VISUAL])  # and loads read it again


# ---- a run folder's files (checksums.json, written last) --------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(base, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    r = CliRunner().invoke(app, ["train-head", "--cache", str(base[0]), "--labels", str(base[1]), "--epochs", "1",
                                 "--d-model", "8", "--window", "8", "--device", "cpu", "--no-plots",
                                 "--tune-bias", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert set(json.loads((out / "checksums.json").read_text())["sha256"]) == {
        "config.json", "metrics.json", "model.safetensors", "predictions_val.parquet"}
    return out


def _weight_bit(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    data = bytearray(path.read_bytes())
    data[header + 5] ^= 0x40  # a float's exponent bit, far from the header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["config-value", "metrics-bias", "model-weight", "checksums-junk"])
def test_a_changed_run_file_is_refused_by_predict_and_evaluate(damage, run_dir, base, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    if damage == "config-value":
        _edit_json(run / "config.json", lambda d: d.update(window=d["window"] + 1))
    elif damage == "metrics-bias":
        _edit_json(run / "metrics.json", lambda d: d["postprocess"]["biases"]["expr"].__setitem__(0, 1.5))
    elif damage == "model-weight":
        _weight_bit(run / "model.safetensors")
    else:
        (run / "checksums.json").write_bytes(b"\x00junk")
    for args in (["predict", "--run", str(run), "--out", str(tmp_path / "p")], ["evaluate", "--run", str(run)]):
        line = _one_line(CliRunner().invoke(app, args))
        assert "checksums.json" in line, line


# ---- face records and per-row extras --------------------------------------------------------------------------

def test_face_records_and_row_extras_are_checked_on_read(tmp_path):
    import zarr

    from affcli.cache.fingerprint import make_fingerprint
    from affcli.cache.rows import read_paths, read_views, row_extras
    from affcli.cache.store import FaceRecord

    st = FeatureStore(tmp_path / "c.zarr")
    st.ensure_feature_set("f:v1", make_fingerprint("f:v1", "visual", 4, "test"))
    n = 6
    faces = FaceRecord(np.ones((n, 4), np.float32), np.ones(n, np.float32), np.ones((n, 5, 2), np.float32))
    st.write_video("f:v1", "v", np.ones((n, 4), np.float32), np.ones(n, bool), np.arange(n) / 5, 5.0, faces=faces,
                   extras=row_extras([f"img{i}.jpg" for i in range(n)], np.ones((2, n, 4), np.float32)))
    assert read_paths(st, "f:v1", "v")[0] == "img0.jpg" and read_views(st, "f:v1", "v").shape == (2, n, 4)
    g = tmp_path / "c.zarr" / safe_key("f:v1") / "v"
    for arr, change in (("faces/box", lambda a: a.__setitem__((2, 1), 9.0)), ("views", lambda a: a.__setitem__(
            (1, 3, 2), 2.0)), ("paths", lambda a: a.__setitem__(0, ord("J")))):
        z = zarr.open_array(str(g / arr), mode="r+")
        a = z[:]
        keep = a.copy()
        change(a)
        z[:] = a
        read = {"faces/box": lambda: st.read_faces("v", "f:v1"), "views": lambda: read_views(st, "f:v1", "v"),
                "paths": lambda: read_paths(st, "f:v1", "v")}[arr]
        with pytest.raises(CacheError, match=f"checksum mismatch in {arr}"):
            read()
        assert any("checksum mismatch" in p for p in verify(tmp_path / "c.zarr"))
        z[:] = keep
    assert verify(tmp_path / "c.zarr") == []
