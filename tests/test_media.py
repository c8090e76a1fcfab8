"""Decoding, audio, frame folders and source discovery on tiny media written by the tests themselves."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from affcli.pipeline.errors import MediaError, NoAudioError
from affcli.pipeline.frames import frame_folder_index, iter_frame_folder
from affcli.pipeline.media import count_frames, iter_video_frames, probe_video, read_audio
from affcli.synthetic.media import (
    click_track,
    corrupted_copy,
    truncated_copy,
    write_not_a_video,
    write_test_video,
    write_video,
)
from affcli.pipeline.sources import discover_sources
from tests.conftest import CLICK_AT, CLICK_FPS


def _decode_all(path: Path, **kw) -> tuple[list[np.ndarray], np.ndarray]:
    batches, times = [], []
    for frames, ts in iter_video_frames(path, **kw):
        batches.append(frames)
        times.append(ts)
    return batches, np.concatenate(times)


# --- video decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001])
def test_frames_order_count_and_true_timestamps(tmp_path: Path, fps: float) -> None:
    n = 45
    ramp = (np.arange(n) * 5).astype(np.uint8)[:, None, None, None] * np.ones((1, 48, 64, 3), np.uint8)
    path = write_video(tmp_path / "ramp.mp4", ramp, fps)
    batches, ts = _decode_all(path, batch_size=16)
    assert [len(b) for b in batches] == [16, 16, 13]
    assert all(b.dtype == np.uint8 and b.shape[1:] == (48, 64, 3) for b in batches)
    frames = np.concatenate(batches)
    assert np.abs(frames.reshape(n, -1).mean(1) - np.arange(n) * 5).max() < 3
    step = 1 / Fraction(fps).limit_denominator(1001)
    np.testing.assert_allclose(ts, np.arange(n) * float(step), atol=1e-6)
    meta = probe_video(path)
    assert (meta.video_id, meta.width, meta.height, meta.n_frames, meta.has_audio) == ("ramp", 64, 48, n, False)
    assert meta.fps == pytest.approx(fps, rel=1e-4)
    assert meta.duration == pytest.approx(n / fps, abs=0.05)
    assert count_frames(path) == n


def test_batches_are_independent_arrays(click_video: Path) -> None:
    batches, _ = _decode_all(click_video, batch_size=8, threads=1)
    assert sum(len(b) for b in batches) == 60
    assert len({id(b.base if b.base is not None else b) for b in batches}) == len(batches)
    assert not np.shares_memory(batches[0], batches[1])


def test_audio_round_trip_and_click_alignment(click_video: Path) -> None:
    audio = read_audio(click_video)
    expected = int(round(60 / CLICK_FPS * 16000))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - expected) <= 1024
    assert np.abs(audio).max() <= 1.0
    click = np.argmax(np.abs(audio)) / 16000
    assert abs(click - CLICK_AT) < 0.010
    quiet = np.abs(audio[: int((CLICK_AT - 0.05) * 16000)])
    assert quiet.max() < 0.05
    at_8k = read_audio(click_video, sample_rate=8000)
    assert abs(len(at_8k) - expected // 2) <= 512
    assert abs(np.argmax(np.abs(at_8k)) / 8000 - CLICK_AT) < 0.010
    assert probe_video(click_video).has_audio


def test_late_audio_stream_is_padded_onto_the_video_clock(tmp_path: Path) -> None:
    path = write_video(
        tmp_path / "late.mp4", np.zeros((50, 64, 64, 3), np.uint8), 25.0, click_track(1.5, 0.5), audio_start=0.37
    )
    audio = read_audio(path)
    assert abs(np.argmax(np.abs(audio)) / 16000 - 0.87) < 0.010
    assert np.abs(audio[: int(0.36 * 16000)]).max() < 0.01
    assert abs(len(audio) - int((0.37 + 1.5) * 16000)) <= 1024


def test_video_without_audio_raises_no_audio(silent_video: Path) -> None:
    with pytest.raises(NoAudioError, match="noaudio.mp4: no audio stream"):
        read_audio(silent_video)
    assert count_frames(silent_video) == 30


def test_text_file_named_mp4_is_a_one_line_media_error(tmp_path: Path) -> None:
    bad = write_not_a_video(tmp_path / "x.mp4")
    for call in (probe_video, count_frames, read_audio, lambda p: next(iter_video_frames(p))):
        with pytest.raises(MediaError) as info:
            call(bad)
        assert str(info.value).startswith(f"{bad}: ") and "\n" not in str(info.value)
        assert not isinstance(info.value, NoAudioError)
    with pytest.raises(MediaError, match="missing.mp4: no such file"):
        probe_video(tmp_path / "missing.mp4")


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000, layout="mono")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        f.sample_rate = 16000
        c.mux(s.encode(f))
        c.mux(s.encode())
    with pytest.raises(MediaError, match="tone.m4a: no video stream"):
        probe_video(path)


def test_truncated_mp4_without_moov_fails_at_open(tmp_path: Path) -> None:
    full = write_test_video(tmp_path / "full.mp4", 25, 25.0, (64, 64), picture="noise")
    cut = truncated_copy(full, tmp_path / "cut.mp4", keep=0.5)
    with pytest.raises(MediaError, match="cut.mp4: not a readable media file"):
        probe_video(cut)
    with pytest.raises(MediaError, match="cut.mp4"):
        list(iter_video_frames(cut))


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_broken_faststart_mp4_yields_partial_frames_then_fails(tmp_path: Path, damage: str) -> None:
    full = write_test_video(tmp_path / "full.mp4", 40, 25.0, (160, 120), picture="noise", faststart=True)
    if damage == "truncated":  # the demuxer stops early, short of the declared frame count
        cut = truncated_copy(full, tmp_path / "cut.mp4", keep=0.5)
    else:  # the decoder meets zeroed packets
        cut = corrupted_copy(full, tmp_path / "cut.mp4", at=0.5)
    got = 0
    with pytest.raises(MediaError) as info:
        for frames, _ in iter_video_frames(cut, batch_size=4):
            got += len(frames)
    assert 0 < got < 40
    assert f"decoding failed after {got} frames" in str(info.value)
    assert str(info.value).startswith(f"{cut}: ")


# --- frame folders ------------------------------------------------------------------------------


def _write_jpgs(folder: Path, indices: list[int], side: int = 24) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in indices:
        rgb = np.zeros((side, side, 3), np.uint8)
        rgb[..., 0] = i * 20
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def test_frame_folder_with_gaps(tmp_path: Path) -> None:
    folder = tmp_path / "video7"
    _write_jpgs(folder, [1, 2, 4, 7])
    (folder / "notes.txt").write_text("ignored")
    n, present = frame_folder_index(folder)
    assert n == 7
    assert present.tolist() == [True, True, False, True, False, False, True]
    out = list(iter_frame_folder(folder, batch_size=3, fps=10.0))
    assert [len(f) for f, _, _ in out] == [3, 3, 1]
    frames = np.concatenate([f for f, _, _ in out])
    ok = np.concatenate([o for _, _, o in out])
    ts = np.concatenate([t for _, t, _ in out])
    assert ok.tolist() == present.tolist()
    np.testing.assert_allclose(ts, np.arange(7) / 10.0)
    red = frames[..., 0].reshape(7, -1).mean(1)
    np.testing.assert_allclose(red[present], np.array([1, 2, 4, 7]) * 20, atol=3)
    assert frames[~present].max() == 0 and frames[..., 2].max() < 5
    resized = next(iter_frame_folder(folder, size=12))[0]
    assert resized.shape == (7, 12, 12, 3)


def test_unreadable_jpg_warns_and_is_marked_not_ok(tmp_path: Path) -> None:
    folder = tmp_path / "v"
    _write_jpgs(folder, [1, 3])
    (folder / "00002.jpg").write_bytes(b"\x00garbage" * 10)
    with pytest.warns(UserWarning, match="00002.jpg"):
        frames, _, ok = next(iter_frame_folder(folder))
    assert ok.tolist() == [True, False, True]
    assert frames[1].max() == 0 and frames[2].max() > 0


def test_empty_or_missing_frame_folder_is_media_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="empty: no frame images"):
        frame_folder_index(tmp_path / "empty")
    with pytest.raises(MediaError, match="empty: no frame images"):
        next(iter_frame_folder(tmp_path / "empty"))
    with pytest.raises(MediaError, match="nope: not a folder"):
        frame_folder_index(tmp_path / "nope")
    bad = tmp_path / "allbad"
    bad.mkdir()
    (bad / "00001.jpg").write_bytes(b"junk")
    with warnings.catch_warnings(), pytest.raises(MediaError, match="allbad: no readable frame image"):
        warnings.simplefilter("ignore")
        next(iter_frame_folder(bad))


# --- source discovery ---------------------------------------------------------------------------


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_discover_videos_and_frame_folders(tmp_path: Path) -> None:
    vids = tmp_path / "videos"
    _touch(vids / "b.mp4", vids / "sub" / "a.AVI", vids / "c.txt", vids / "d.webm")
    found = discover_sources(video_dir=vids)
    assert [(s.video_id, s.kind) for s in found] == [("a", "video"), ("b", "video"), ("d", "video")]
    assert found[0].path == vids / "sub" / "a.AVI"
    crops = tmp_path / "cropped_aligned"
    _write_jpgs(crops / "video2", [1])
    _write_jpgs(crops / "video1", [1])
    assert [(s.video_id, s.kind) for s in discover_sources(frames_dir=crops)] == [
        ("video1", "frames"),
        ("video2", "frames"),
    ]


def test_video_filter_list_file_and_unknown_ids(tmp_path: Path) -> None:
    vids = tmp_path / "videos"
    _touch(*(vids / f"{v}.mp4" for v in ("v1", "v2", "v3", "v10")))
    assert [s.video_id for s in discover_sources(vids, videos=["v3", "v1"])] == ["v1", "v3"]
    assert [s.video_id for s in discover_sources(vids, videos=["v2,v10"])] == ["v10", "v2"]
    listing = tmp_path / "ids.txt"
    listing.write_text("v2\n\nv3, v1  # comment\nv10_left\n")
    assert [s.video_id for s in discover_sources(vids, videos=listing)] == ["v1", "v10", "v2", "v3"]
    with pytest.raises(ValueError, match="unknown video ids in the filter: v9, zz"):
        discover_sources(vids, videos=["v1", "v9", "zz"])
    with pytest.raises(ValueError, match="not a folder"):
        discover_sources(tmp_path / "nope")


def test_duplicate_stems_are_refused_naming_both(tmp_path: Path) -> None:
    vids = tmp_path / "videos"
    _touch(vids / "x" / "clip.mp4", vids / "y" / "clip.mkv", vids / "other.mp4")
    with pytest.raises(ValueError) as info:
        discover_sources(vids)
    msg = str(info.value)
    assert "'clip'" in msg and str(vids / "x" / "clip.mp4") in msg and str(vids / "y" / "clip.mkv") in msg
