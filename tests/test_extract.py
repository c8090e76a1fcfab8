"""`affcli extract` end to end with the tiny backbones: cache contents, resume, kill, and every bad input."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from affcli.cache import FeatureStore
from affcli.cache.verify import verify
from affcli.cli import app
from affcli.synthetic.media import write_test_video
from affcli.pipeline.extract import ExtractConfig
from affcli.pipeline.media import iter_video_frames

ROOT = Path(__file__).resolve().parents[1]
SPECS = ["clip:tiny", "wav2vec2:tiny", "ast:tiny"]
SR = 16000
runner = CliRunner()


def _tone(seconds: float, f0: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    write_test_video(d / "alpha.mp4", n_frames=30, fps=15.0, size=(160, 120), audio=_tone(2.0), picture="face")
    write_test_video(d / "beta.mp4", n_frames=24, fps=12.0, size=(160, 120), audio=_tone(2.0, 220.0), picture="face")
    return d


def _extract(cache: Path, *args: str, specs=SPECS):
    cmd = ["extract", "--cache", str(cache), "--device", "cpu", "--batch-size", "16"]
    for s in specs:
        cmd += ["--backbone", s]
    return runner.invoke(app, cmd + list(args))


def _arrays(cache: Path) -> dict:
    st = FeatureStore(cache, mode="r")
    out = {}
    for s in st.feature_sets():
        for v in st.videos(s):
            r = st.read_video(s, v)
            out[(s, v)] = (r.feats, r.valid, r.timestamps)
    return out


def test_extract_writes_every_set_and_verifies(video_dir, tmp_path):
    cache = tmp_path / "c.zarr"
    res = _extract(cache, "--video-dir", str(video_dir))
    assert res.exit_code == 0, res.output
    st = FeatureStore(cache, mode="r")
    assert st.feature_sets() == sorted(SPECS)
    for spec in SPECS:
        assert st.videos(spec) == ["alpha", "beta"]
        fp = st.fingerprint(spec)
        assert fp["spec"] == spec and fp["weights_sha256"] and fp["dim"] > 0
        for vid, n in (("alpha", 30), ("beta", 24)):
            decoded = np.concatenate([t for _, t in iter_video_frames(video_dir / f"{vid}.mp4")])
            rec = st.read_video(spec, vid)
            assert rec.feats.shape == (len(decoded), fp["dim"]) and len(decoded) == n
            np.testing.assert_allclose(rec.timestamps, decoded)
            assert rec.valid.dtype == bool
    assert st.fingerprint("wav2vec2:tiny")["alignment"] == "centered"
    assert st.modalities() == {"clip:tiny": "visual", "wav2vec2:tiny": "audio", "ast:tiny": "audio"}
    assert [st.fingerprint(s)["dim"] for s in SPECS] == [64, 32, 32]
    assert st.read_video("clip:tiny", "alpha").valid.mean() > 0.5, "the face should be found in most frames"
    assert {n for n, _ in st.text_sets()} == {"expr8", "va9"}
    assert (cache / "manifest.parquet").exists()
    assert verify(cache) == []
    assert runner.invoke(app, ["cache", "verify", str(cache)]).exit_code == 0
    ls = runner.invoke(app, ["cache", "ls", str(cache)])
    assert "clip:tiny" in ls.output and ls.exit_code == 0


def test_rerun_computes_nothing(video_dir, tmp_path):
    cache = tmp_path / "c.zarr"
    assert _extract(cache, "--video-dir", str(video_dir), specs=["clip:tiny"]).exit_code == 0
    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file() and p.name != "manifest.parquet"
              and p.parent != cache}
    res = _extract(cache, "--video-dir", str(video_dir), specs=["clip:tiny"])
    assert res.exit_code == 0 and "2 skipped" in res.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_other_backbone_under_same_cache_is_refused(video_dir, tmp_path):
    cache = tmp_path / "c.zarr"
    assert _extract(cache, "--video-dir", str(video_dir), specs=["clip:tiny"]).exit_code == 0
    before = _arrays(cache)
    res = _extract(cache, "--video-dir", str(video_dir), "--seed", "1", specs=["clip:tiny"])
    assert res.exit_code == 2
    assert "different fingerprint" in res.output and str(cache) in res.output
    res = _extract(cache, "--video-dir", str(video_dir), "--face", "none", specs=["clip:tiny"])
    assert res.exit_code == 2 and "preprocessing" in res.output
    after = _arrays(cache)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k][0], after[k][0])


def test_bad_videos_fail_alone(video_dir, tmp_path):
    d = tmp_path / "mixed"
    shutil.copytree(video_dir, d)
    good = (d / "alpha.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (d / "notavideo.mp4").write_text("this is not a video\n")
    write_test_video(d / "silent.mp4", n_frames=20, fps=10.0, size=(160, 120), audio=None, picture="face")
    write_test_video(d / "faceless.mp4", n_frames=20, fps=10.0, size=(160, 120), audio=_tone(2.0), picture="noise")
    cache = tmp_path / "c.zarr"
    res = _extract(cache, "--video-dir", str(d))
    assert res.exit_code == 1, res.output
    st = FeatureStore(cache, mode="r")
    for spec in SPECS:
        assert {"alpha", "beta", "silent", "faceless"} <= set(st.videos(spec))
        fails = st.failures(spec)
        assert "notavideo" in fails and "notavideo.mp4" in fails["notavideo"]
        assert "\n" not in fails["notavideo"]
        if "truncated" not in st.videos(spec):
            assert "truncated.mp4" in fails["truncated"]
    for spec in ("wav2vec2:tiny", "ast:tiny"):
        assert not st.read_video(spec, "silent").valid.any()
        assert not st.read_video(spec, "silent").feats.any()
    assert st.read_video("clip:tiny", "silent").valid.any()
    faceless = st.read_video("clip:tiny", "faceless")
    assert faceless.feats.shape[0] == 20 and not faceless.valid.any() and not faceless.feats.any()
    assert st.read_video("wav2vec2:tiny", "faceless").valid.any()
    assert "notavideo.mp4" in res.output and "silent.mp4" in res.output and "faceless.mp4" in res.output
    assert verify(cache) == []
    # a later run retries only the failures and keeps the rest
    before = _arrays(cache)
    res2 = _extract(cache, "--video-dir", str(d))
    after = _arrays(cache)
    for k in before:
        np.testing.assert_array_equal(before[k][0], after[k][0])


def test_frames_dir_input(tmp_path):
    import cv2

    root = tmp_path / "cropped_aligned"
    vid = root / "v1"
    vid.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in (1, 2, 4, 5):
        cv2.imwrite(str(vid / f"{i:05d}.jpg"), rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    (vid / "00006.jpg").write_bytes(b"garbage, not a jpeg")
    (root / "empty").mkdir()
    cache = tmp_path / "c.zarr"
    res = _extract(cache, "--frames-dir", str(root), specs=["clip:tiny"])
    st = FeatureStore(cache, mode="r")
    rec = st.read_video("clip:tiny", "v1")
    assert rec.valid.tolist() == [True, True, False, True, True, False]
    assert not rec.feats[2].any() and rec.feats[0].any()
    np.testing.assert_allclose(rec.timestamps, np.arange(6) / 30.0)
    assert "empty" in st.failures("clip:tiny") and "empty" in res.output
    assert res.exit_code == 1


def _run_cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", "from affcli.cli import app; app()"] + args, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_kill_midrun_then_resume_equals_clean_run(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    for i in range(4):
        write_test_video(d / f"v{i}.mp4", n_frames=40, fps=20.0, size=(160, 120), audio=_tone(2.0, 200 + 50 * i),
                         picture="face")
    args = ["extract", "--video-dir", str(d), "--device", "cpu", "--batch-size", "8", "--decode-workers", "1"]
    for s in SPECS:
        args += ["--backbone", s]
    clean = tmp_path / "clean.zarr"
    p = _run_cli(args + ["--cache", str(clean)])
    assert p.wait(timeout=300) == 0, p.stdout.read().decode()
    killed = tmp_path / "killed.zarr"
    p = _run_cli(args + ["--cache", str(killed)])
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if FeatureStore(killed, mode="r").videos("ast:tiny"):
                break
        except Exception:
            pass
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    partial = _arrays(killed)
    assert 0 < len({v for _, v in partial}) < 4, "the kill should land mid-run"
    p = _run_cli(args + ["--cache", str(killed)])
    assert p.wait(timeout=300) == 0, p.stdout.read().decode()
    a, b = _arrays(clean), _arrays(killed)
    assert a.keys() == b.keys() and len(a) == 12
    for k in a:
        for x, y in zip(a[k], b[k]):
            np.testing.assert_array_equal(x, y)
    assert verify(killed) == []


@pytest.mark.parametrize("args, message", [
    ([], "give a video folder (--video-dir) or a frame folder (--frames-dir)"),
    (["--video-dir", ".", "--audio-align", "ahead"], "audio alignment must be centered or causal, not 'ahead'"),
    (["--video-dir", ".", "--prompts", "nope"], "unknown prompt set(s) nope"),
])
def test_extract_config_refused_in_one_line_before_any_work(tmp_path, args, message):
    cache = tmp_path / "c.zarr"
    res = _extract(cache, *args, specs=["clip:tiny"])
    assert res.exit_code == 2 and message in res.output and not cache.exists()
    with pytest.raises(ValueError, match="extract: "):
        ExtractConfig(cache=cache, backbones=["clip:tiny"], audio_align="ahead").validate()


def test_video_filter_from_comma_list_or_file(video_dir, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# only one\nbeta\n")
    for sel in ("beta", str(ids)):
        cache = tmp_path / f"c{len(sel)}.zarr"
        assert _extract(cache, "--video-dir", str(video_dir), "--videos", sel, specs=["clip:tiny"]).exit_code == 0
        assert FeatureStore(cache, mode="r").videos("clip:tiny") == ["beta"]


def test_default_mtcnn_stores_sane_boxes_and_landmarks(video_dir, tmp_path):
    cache = tmp_path / "c.zarr"
    assert _extract(cache, "--video-dir", str(video_dir), specs=["clip:tiny"]).exit_code == 0
    st = FeatureStore(cache, mode="r")
    assert st.fingerprint("clip:tiny")["preprocessing"]["crop"]["detector"] == "mtcnn"
    f = st.read_faces("alpha")
    assert f.box.shape == (30, 4) and f.score.shape == (30,) and f.landmarks.shape == (30, 5, 2)
    assert f.attrs["detector"] == "mtcnn" and f.attrs["align"] is True and f.attrs["source"].endswith("alpha.mp4")
    ok = f.attrs["valid"]
    assert ok.mean() > 0.9 and (f.score[ok] > 0.9).all() and np.isnan(f.box[~ok]).all()
    b, m = f.box[ok], f.landmarks[ok]
    assert (b[:, 0] >= -5).all() and (b[:, 2] <= 165).all() and (b[:, 2] - b[:, 0] > 20).all()
    inside = (m[..., 0] > b[:, None, 0]) & (m[..., 0] < b[:, None, 2]) & (m[..., 1] > b[:, None, 1]) & (m[..., 1] < b[:, None, 3])
    assert inside.all(), "every landmark lies inside its face box"
    assert (m[:, :2, 1].max(1) < m[:, 3:, 1].min(1)).all() and (m[:, 0, 0] < m[:, 1, 0]).all(), "eyes above mouth, left eye left"
    rec = st.read_video("clip:tiny", "alpha")
    np.testing.assert_array_equal(rec.valid, ok)


def test_haar_and_none_still_work(video_dir, tmp_path):
    haar, none = tmp_path / "h.zarr", tmp_path / "n.zarr"
    assert _extract(haar, "--video-dir", str(video_dir), "--face", "haar", specs=["clip:tiny"]).exit_code == 0
    f = FeatureStore(haar, mode="r").read_faces("beta")
    assert f.attrs["detector"] == "haar" and f.attrs["align"] is False and np.isnan(f.landmarks).all()
    assert np.isfinite(f.box[f.attrs["valid"]]).all() and f.attrs["valid"].mean() > 0.5
    assert _extract(none, "--video-dir", str(video_dir), "--face", "none", specs=["clip:tiny"]).exit_code == 0
    st = FeatureStore(none, mode="r")
    assert st.read_video("clip:tiny", "beta").valid.all()
    with pytest.raises(Exception, match="no face record"):
        st.read_faces("beta")
    res = _extract(tmp_path / "x.zarr", "--video-dir", str(video_dir), "--face", "haar", "--align", specs=["clip:tiny"])
    assert res.exit_code == 2 and "--align needs face landmarks" in res.output


def test_detect_every_tracks_and_a_corrupted_face_array_fails_verify(video_dir, tmp_path):
    import zarr

    cache = tmp_path / "c.zarr"
    assert _extract(cache, "--video-dir", str(video_dir), "--detect-every", "5", specs=["clip:tiny"]).exit_code == 0
    st = FeatureStore(cache, mode="r")
    f = st.read_faces("alpha")
    assert f.attrs["detect_every"] == 5 and f.attrs["valid"].mean() > 0.9
    assert verify(cache) == []
    arr = zarr.open_array(str(cache / "clip_tiny" / "alpha" / "faces" / "box"), mode="r+")
    arr[3, 0] = arr[3, 0] + 7.0
    assert any("alpha" in p and "checksum" in p for p in verify(cache))


@pytest.mark.parametrize("flag", ["--video-dir", "--frames-dir", "--images-dir"])
def test_empty_input_folder_is_one_line_and_creates_no_store(tmp_path, flag):
    (tmp_path / "empty").mkdir()
    cache = tmp_path / "c.zarr"
    res = runner.invoke(app, ["extract", flag, str(tmp_path / "empty"), "--cache", str(cache), "-b", "clip:tiny"])
    assert res.exit_code == 2, res.output
    err = res.output.strip().splitlines()
    assert len(err) == 1 and "nothing to extract" in err[0] and str(tmp_path / "empty") in err[0]
    assert not cache.exists()
