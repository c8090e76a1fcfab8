"""`affcli cache faces`: the per-video face summary and the box + landmarks drawn on frames of the source."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageColor
from typer.testing import CliRunner

from affcli.cache.fingerprint import make_fingerprint
from affcli.cache.store import FaceRecord, FeatureStore
from affcli.cli import app
from affcli.pipeline.face_report import BOX_COLOUR, LANDMARK_COLOURS, face_report, parse_frames
from affcli.synthetic.media import write_test_video

runner = CliRunner()
N = 12
GREEN = ImageColor.getrgb(BOX_COLOUR)


def _known_faces() -> FaceRecord:
    """Frames 0..N-1: a face box moving right by 2 px a frame with its five landmarks; frames 3 and 7 without a face."""
    x0 = 30 + 2 * np.arange(N, dtype=np.float32)
    box = np.stack([x0, np.full(N, 20), x0 + 60, np.full(N, 90)], 1).astype(np.float32)
    marks = np.array([[15, 25], [45, 25], [30, 40], [18, 55], [42, 55]], np.float32)
    lm = (marks[None] + np.stack([x0, np.full(N, 20)], 1)[:, None]).astype(np.float32)
    score = np.linspace(0.9, 0.99, N).astype(np.float32)
    for i in (3, 7):
        box[i], lm[i], score[i] = np.nan, np.nan, 0
    return FaceRecord(box, score, lm, {"detector": "test", "align": False})


@pytest.fixture
def cache_with_faces(tmp_path):
    video = write_test_video(tmp_path / "src" / "v1.mp4", N, 12.0, (160, 120), picture="blank")
    cache = tmp_path / "c.zarr"
    st = FeatureStore(cache)
    st.ensure_feature_set("vis:test", make_fingerprint("vis:test", "visual", 4, "0" * 64))
    faces = _known_faces()
    st.write_video("vis:test", "v1", np.zeros((N, 4), np.float32), np.isfinite(faces.box).all(1),
                   np.arange(N) / 12.0, 12.0, source=str(video), faces=faces)
    return cache, video, faces


def test_summary_counts_frames_with_a_face_and_their_mean_score(cache_with_faces):
    cache, _, faces = cache_with_faces
    rep = face_report(cache, "v1", frames="0,3,11")
    found = np.isfinite(faces.box).all(1)
    assert (rep.n_frames, rep.found, rep.with_landmarks) == (N, N - 2, N - 2)
    assert rep.mean_score == pytest.approx(float(faces.score[found].mean()))
    assert rep.settings == {"detector": "test", "align": False} and rep.spec == "vis:test"
    assert [r["frame"] for r in rep.rows] == [0, 3, 11] and rep.rows[1]["face"] is False
    assert rep.rows[2]["box"] == pytest.approx(faces.box[11].tolist()) and rep.rows[2]["time"] == pytest.approx(11 / 12)
    r = runner.invoke(app, ["cache", "faces", str(cache), "v1", "--frames", "0,3,11"])
    assert r.exit_code == 0, r.output
    assert f"face in {N - 2}/{N} frames (83.3%)" in r.output and "     3    0.250      -  no face" in r.output


def _drawn(png, row) -> None:
    img = np.asarray(Image.open(png).convert("RGB"))
    x0, y0, x1, y1 = (int(round(v)) for v in row["box"])
    edge = img[y1 - 1, x0 + 5:x1 - 5]
    assert (edge == GREEN).all(), "the box's bottom edge is drawn"
    for (x, y), colour in zip(row["landmarks"], LANDMARK_COLOURS):
        assert tuple(img[int(round(y)), int(round(x))]) == ImageColor.getrgb(colour)
    inside = img[y0 + 3:y1 - 3, x0 + 3:x0 + 8]
    assert not (inside == GREEN).all(-1).any(), "nothing green inside the box away from the marks"


def test_render_draws_the_recorded_box_and_landmarks_on_the_video(cache_with_faces, tmp_path):
    cache, _, _ = cache_with_faces
    out = tmp_path / "png"
    r = runner.invoke(app, ["cache", "faces", str(cache), "v1", "--render", str(out), "--frames", "2,7,10"])
    assert r.exit_code == 0, r.output
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["v1_000002.png", "v1_000007.png", "v1_000010.png"]
    rep = face_report(cache, "v1", frames="2,7,10")
    _drawn(pngs[0], rep.rows[0])
    _drawn(pngs[2], rep.rows[2])
    assert Image.open(pngs[1]).size == (160, 120)  # a frame without a face is still written, captioned "no face"


def test_render_from_a_frames_folder_and_by_video_dir(cache_with_faces, tmp_path):
    cache, video, _ = cache_with_faces
    from affcli.pipeline.media import iter_video_frames

    frames = np.concatenate([f for f, _ in iter_video_frames(video)])
    folder = tmp_path / "frames" / "v1"
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i + 1:05d}.png")
    rep = face_report(cache, "v1", frames="5", render_dir=tmp_path / "a", frames_dir=tmp_path / "frames")
    _drawn(rep.rendered[0], rep.rows[0])
    moved = tmp_path / "moved"
    video.parent.rename(moved)
    rep = face_report(cache, "v1", frames="5", render_dir=tmp_path / "b", video_dir=moved)
    _drawn(rep.rendered[0], rep.rows[0])


def test_errors_are_one_line(cache_with_faces, tmp_path):
    cache, video, _ = cache_with_faces
    cases = [
        (["cache", "faces", str(cache), "nope"], "no face record for video 'nope'"),
        (["cache", "faces", str(cache), "v1", "--frames", "0,99"], "frames run 0..11 (99 is outside)"),
        (["cache", "faces", str(tmp_path / "none.zarr"), "v1"], "no feature cache here"),
        (["cache", "faces", str(cache), "v1", "--render", str(tmp_path / "r"), "--video-dir", str(tmp_path),
          "--frames-dir", str(tmp_path)], "give --video-dir or --frames-dir, not both"),
    ]
    video.unlink()
    cases.append((["cache", "faces", str(cache), "v1", "--render", str(tmp_path / "r")],
                  f"source of video 'v1' not found (the cache recorded {video}); give --video-dir or --frames-dir"))
    for args, msg in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1 and msg in r.output, r.output


def test_cache_without_face_record(tmp_path):
    st = FeatureStore(tmp_path / "c.zarr")
    st.ensure_feature_set("vis:test", make_fingerprint("vis:test", "visual", 4, "0" * 64))
    st.write_video("vis:test", "v1", np.zeros((3, 4), np.float32), np.ones(3, bool), np.arange(3.0), 1.0)
    r = runner.invoke(app, ["cache", "faces", str(tmp_path / "c.zarr"), "v1"])
    assert r.exit_code == 2 and "no face record for video 'v1'" in r.output


def test_parse_frames_spreads_by_default():
    assert parse_frames(None, 100) == [0, 33, 66, 99] and parse_frames(None, 2) == [0, 1]
    assert parse_frames("10, 0,10", 11) == [0, 10]
    with pytest.raises(ValueError, match="expected frame indices"):
        parse_frames("a,b", 10)


def test_on_an_extracted_cache_with_the_default_detector(tmp_path):
    videos = tmp_path / "videos"
    write_test_video(videos / "alpha.mp4", 20, 10.0, (160, 120), picture="face")
    cache = tmp_path / "x.zarr"
    r = runner.invoke(app, ["extract", "--cache", str(cache), "--video-dir", str(videos), "-b", "clip:tiny",
                            "--device", "cpu", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["cache", "faces", str(cache), "alpha", "--render", str(tmp_path / "png")])
    assert r.exit_code == 0, r.output
    assert "detector=mtcnn" in r.output and "face in 20/20 frames (100.0%)" in r.output
    rep = face_report(cache, "alpha")
    assert [p.name for p in sorted((tmp_path / "png").glob("*.png"))] == [
        f"alpha_{i:06d}.png" for i in (0, 6, 13, 19)]
    for row, png in zip(rep.rows, sorted((tmp_path / "png").glob("*.png"))):
        img = np.asarray(Image.open(png).convert("RGB"))
        x0, y0, x1, y1 = (int(round(v)) for v in row["box"])
        top = img[max(y0, 0), max(x0, 0):min(x1, 159)]
        assert (top == GREEN).all(-1).mean() > 0.8, "the stored box is drawn where the cache says"
