"""Checked reads: a corrupted chunk, a deleted array metadata file or an edited fingerprint is one line naming the
feature set and the video (load_table, as_dask, train-head, evaluate, predict); --skip-bad leaves the video out."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affcli.cache import as_dask, load_table
from affcli.cache.errors import BadVideo, CacheError
from affcli.cache.store import FeatureStore, safe_key
from affcli.cache.verify import verify
from affcli.cli import app
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

torch.set_num_threads(1)
BAD = "video001"


@pytest.fixture
def synth(tmp_path) -> tuple[Path, Path]:
    return make_synthetic(tmp_path / "s", n_videos=6, n_frames=60, dims=(12, 8))


def _video_dir(cache: Path, spec: str = VISUAL, vid: str = BAD) -> Path:
    return cache / safe_key(spec) / safe_key(vid)


def flip_bytes(cache: Path, spec: str = VISUAL, vid: str = BAD, at: int = 40, n: int = 8) -> None:
    """Invert `n` bytes of the feats shard of one video, as silent disk corruption would."""
    chunk = next(p for p in (_video_dir(cache, spec, vid) / "feats" / "c").rglob("*") if p.is_file())
    raw = bytearray(chunk.read_bytes())
    raw[at:at + n] = bytes(b ^ 0xFF for b in raw[at:at + n])
    chunk.write_bytes(bytes(raw))


def edit_fingerprint(cache: Path, spec: str = VISUAL, **fields) -> None:
    meta = cache / safe_key(spec) / "zarr.json"
    d = json.loads(meta.read_text())
    d["attributes"]["fingerprint"].update(fields)
    meta.write_text(json.dumps(d))


def _one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def _train(cache: Path, labels: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "-f", VISUAL,
                                    "-f", AUDIO, "--epochs", "1", "--window", "8", "--stride", "8", "--d-model", "8",
                                    "--device", "cpu", "--no-plots", "--out", str(out), *extra])


def test_flipped_bytes_refused_then_skipped(synth, capsys):
    cache, _ = synth
    flip_bytes(cache)
    with pytest.raises(BadVideo, match=f"feature set '{VISUAL}', video '{BAD}': checksum mismatch") as e:
        load_table(cache, [VISUAL, AUDIO])
    assert (e.value.spec, e.value.video) == (VISUAL, BAD) and "\n" not in str(e.value)
    capsys.readouterr()
    tab = load_table(cache, [VISUAL, AUDIO], skip_bad=True)
    assert BAD not in tab.videos and len(tab.videos) == 5 and tab.n_frames == 5 * 60
    assert tab.feats[AUDIO].shape[0] == tab.feats[VISUAL].shape[0] == tab.timestamps.shape[0] == 300
    clean = FeatureStore(cache, mode="r").read_video(VISUAL, "video002").feats
    np.testing.assert_array_equal(tab.feats[VISUAL][tab.video_slice("video002")].numpy(), clean)
    warned = _one_line(capsys.readouterr().err)
    assert warned.startswith("warning:") and BAD in warned and VISUAL in warned


def test_as_dask_checks_on_compute(synth):
    cache, _ = synth
    arr, offsets, vids = as_dask(cache, VISUAL)
    assert arr.shape == (360, 12)
    np.testing.assert_array_equal(arr[60:120].compute(), FeatureStore(cache, mode="r").read_video(VISUAL, BAD).feats)
    flip_bytes(cache)
    arr, _, _ = as_dask(cache, VISUAL)
    assert arr[:60].compute().shape == (60, 12)
    with pytest.raises(BadVideo, match=BAD):
        arr[60:120].compute()


def test_train_head_refuses_corrupt_chunk_with_one_line(synth, tmp_path):
    cache, labels = synth
    flip_bytes(cache)
    r = _train(cache, labels, tmp_path / "run")
    assert r.exit_code == 2
    line = _one_line(r.output)
    assert "error" in line and VISUAL in line and BAD in line and "checksum" in line
    r = _train(cache, labels, tmp_path / "run2", "--skip-bad")
    assert r.exit_code == 0, r.output
    warned = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and BAD in warned[0]


def test_deleted_array_metadata_loads_intact_data_and_verify_names_it(synth):
    cache, _ = synth
    ref = FeatureStore(str(cache), mode="r").read_video(VISUAL, BAD).feats
    (_video_dir(cache) / "feats" / "zarr.json").unlink()
    tab = load_table(cache, [VISUAL])  # layout from n_frames + fingerprint, bytes checked against the CRC-32C
    np.testing.assert_array_equal(tab.feats[VISUAL][tab.video_slice(BAD)].numpy(), ref)
    assert any(BAD in p and VISUAL in p for p in verify(cache))
    with pytest.raises(BadVideo, match=f"video '{BAD}'"):
        as_dask(cache, VISUAL)


def test_edited_fingerprint_dim_is_one_line(synth, tmp_path):
    cache, labels = synth
    edit_fingerprint(cache, dim=13)
    with pytest.raises(BadVideo, match="fingerprint says dim 13 but feats hold 12"):
        load_table(cache, [VISUAL])
    with pytest.raises(BadVideo, match="dim 13"):
        as_dask(cache, VISUAL)
    r = _train(cache, labels, tmp_path / "run")
    assert r.exit_code == 2
    line = _one_line(r.output)
    assert VISUAL in line and "dim 13" in line
    assert any("dim" in p and "13" in p for p in verify(cache))


def test_evaluate_and_predict_skip_bad(synth, tmp_path):
    cache, labels = synth
    run = tmp_path / "run"
    assert _train(cache, labels, run).exit_code == 0
    flip_bytes(cache, vid="video005")
    r = CliRunner().invoke(app, ["evaluate", "--run", str(run)])
    assert r.exit_code == 2 and "video005" in _one_line(r.output)
    r = CliRunner().invoke(app, ["evaluate", "--run", str(run), "--skip-bad"])
    assert r.exit_code == 0, r.output
    assert sum(line.startswith("warning:") and "video005" in line for line in r.output.splitlines()) == 1
    out = tmp_path / "pred"
    r = CliRunner().invoke(app, ["predict", "--run", str(run), "--out", str(out), "--style", "per-video"])
    assert r.exit_code == 2 and "video005" in _one_line(r.output) and not (out / "video000.txt").exists()
    r = CliRunner().invoke(app, ["predict", "--run", str(run), "--out", str(out), "--style", "per-video", "--skip-bad"])
    assert r.exit_code == 0, r.output
    assert sorted(p.stem for p in out.glob("*.txt")) == [f"video00{i}" for i in range(5)]


def test_missing_cache_group_is_cache_error(synth):
    cache, _ = synth
    with pytest.raises(CacheError, match="lacks"):
        load_table(cache, [VISUAL], ["nope"])


def test_verify_rederives_dim_dtype_and_weights_hash(tmp_path):
    from affcli.pipeline.backbones import build_backbone

    cache = tmp_path / "c.zarr"
    store = FeatureStore(cache)
    fp = build_backbone("clip:tiny").fingerprint()
    store.ensure_feature_set("clip:tiny", fp)
    rng = np.random.default_rng(0)
    store.write_video("clip:tiny", "a", rng.normal(size=(10, fp["dim"])), np.ones(10, bool), np.arange(10) / 30, 30.0)
    r = CliRunner().invoke(app, ["cache", "verify", str(cache), "--weights"])
    assert r.exit_code == 0, r.output
    edit_fingerprint(cache, "clip:tiny", weights_sha256="0" * 64)
    r = CliRunner().invoke(app, ["cache", "verify", str(cache)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["cache", "verify", str(cache), "--weights"])
    assert r.exit_code == 1 and "weights_sha256 000000000000" in r.output
    edit_fingerprint(cache, "clip:tiny", weights_sha256=fp["weights_sha256"], dtype="float32")
    r = CliRunner().invoke(app, ["cache", "verify", str(cache), "--weights"])
    assert r.exit_code == 1 and "clip:tiny/a: fingerprint says dtype 'float32' but feats hold float16" in r.output
    with pytest.raises(BadVideo, match="dtype 'float32'"):
        load_table(cache, ["clip:tiny"])


def test_export_h5_refuses_a_corrupt_video(synth, tmp_path):
    cache, _ = synth
    flip_bytes(cache)
    r = CliRunner().invoke(app, ["cache", "export-h5", str(cache), str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and BAD in _one_line(r.output) and "checksum" in r.output
    assert not (tmp_path / "x.h5").exists()
