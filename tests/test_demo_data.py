"""The demo dataset: Aff-Wild2 label files, decodable videos of the right length, labels visible and audible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from affcli.common.vocab import AU_NAMES, EXPR_CLASSES
from affcli.heads.tasks import get_task
from affcli.pipeline.crops import face_crops
from affcli.pipeline.detectors import DETECTORS
from affcli.pipeline.media import count_frames, iter_video_frames, probe_video, read_audio
from affcli.synthetic.media import CLASS_PITCH, DemoDataset, make_demo_dataset

EXPR_DIR, VA_DIR, AU_DIR = (get_task(t).labels.folders[0] for t in ("expr", "va", "au"))

FPS = 25.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoDataset:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), n_videos=3, seconds=4.0, fps=FPS, seed=3)


def _labels(ds: DemoDataset, task: str, vid: str) -> tuple[str, np.ndarray]:
    split = {"train": "Train_Set", "val": "Validation_Set"}[ds.splits[vid]]
    lines = (ds.label_root / task / split / f"{vid}.txt").read_text().splitlines()
    return lines[0], np.array([[float(x) for x in line.split(",")] for line in lines[1:]])


def test_layout_splits_and_label_files(demo: DemoDataset) -> None:
    assert demo.video_ids == ["demo00", "demo01", "demo02"]
    assert sorted(demo.splits.values()) == ["train", "train", "val"]
    for vid in demo.video_ids:
        n = demo.n_frames[vid]
        assert n == 100
        header, expr = _labels(demo, EXPR_DIR, vid)
        assert header == "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
        assert expr.shape == (n, 1) and set(np.unique(expr)) <= set(range(8))
        header, va = _labels(demo, VA_DIR, vid)
        assert header == "valence,arousal" and va.shape == (n, 2) and np.abs(va).max() <= 1
        header, au = _labels(demo, AU_DIR, vid)
        assert header == ",".join(AU_NAMES) and au.shape == (n, 12) and set(np.unique(au)) <= {0, 1}
        assert len(np.unique(expr)) >= 2, "labels must change within a video"
    other = "Validation_Set" if demo.splits["demo00"] == "train" else "Train_Set"
    assert not (demo.label_root / EXPR_DIR / other / "demo00.txt").exists()


def test_videos_decode_to_label_length_with_audio(demo: DemoDataset) -> None:
    for vid in demo.video_ids:
        path = demo.video_dir / f"{vid}.mp4"
        meta = probe_video(path)
        assert meta.has_audio and meta.fps == pytest.approx(FPS) and (meta.width, meta.height) == (160, 120)
        assert count_frames(path) == demo.n_frames[vid]
        assert abs(len(read_audio(path)) - 4.0 * 16000) <= 1024


def test_deterministic_by_seed(tmp_path: Path) -> None:
    a = make_demo_dataset(tmp_path / "a", n_videos=2, seconds=1.0, seed=5)
    b = make_demo_dataset(tmp_path / "b", n_videos=2, seconds=1.0, seed=5)
    c = make_demo_dataset(tmp_path / "c", n_videos=2, seconds=1.0, seed=6)
    va = [_labels(d, VA_DIR, "demo01")[1] for d in (a, b, c)]
    assert a.splits == b.splits
    np.testing.assert_array_equal(va[0], va[1])
    assert not np.array_equal(va[0], va[2])


def test_picture_follows_labels_and_has_a_faceless_stretch(demo: DemoDataset) -> None:
    haar = DETECTORS.build("haar", "cpu", 2)
    feats, classes, valence = [], [], []
    for vid in demo.video_ids:
        frames = torch.from_numpy(np.concatenate([f for f, _ in iter_video_frames(demo.video_dir / f"{vid}.mp4")]))
        x = frames.permute(0, 3, 1, 2)
        d = haar(x)
        crops = face_crops(x, d.boxes, d.landmarks, d.valid, 32, align=False, margin=0.25).permute(0, 2, 3, 1).numpy()
        valid = d.valid.numpy()
        gap = np.zeros(len(valid), bool)
        if vid in demo.no_face:
            gap[slice(*demo.no_face[vid])] = True
            assert not valid[gap].any()
        assert valid[~gap].mean() > 0.9
        expr = _labels(demo, EXPR_DIR, vid)[1][:, 0].astype(int)
        va = _labels(demo, VA_DIR, vid)[1]
        centre = crops[valid, 8:24, 8:24].reshape(valid.sum(), -1, 3).astype(np.float32).mean(1)
        feats.append(centre / centre.sum(1, keepdims=True))
        classes.append(expr[valid])
        valence.append((centre.mean(1), va[valid, 0], expr[valid]))
    assert demo.no_face, "one demo video must hold frames without a face"
    x, y = np.concatenate(feats), np.concatenate(classes)
    present = np.unique(y)
    centroids = np.stack([x[y == c].mean(0) for c in present])
    pred = present[np.argmin(((x[:, None] - centroids[None]) ** 2).sum(-1), 1)]
    assert (pred == y).mean() > 0.6, "face tint must reveal the expression class"
    bright, val, cls = (np.concatenate(v) for v in zip(*valence, strict=True))
    within = [
        np.corrcoef(bright[cls == c], val[cls == c])[0, 1]
        for c in present
        if (cls == c).sum() > 30 and val[cls == c].std() > 0.05
    ]
    assert within and np.mean(within) > 0.3, "face brightness must follow valence"


def test_audio_follows_labels(demo: DemoDataset) -> None:
    hits, total, loud, val = 0, 0, [], []
    for vid in demo.video_ids:
        audio = read_audio(demo.video_dir / f"{vid}.mp4")
        expr = _labels(demo, EXPR_DIR, vid)[1][:, 0].astype(int)
        va = _labels(demo, VA_DIR, vid)[1]
        hop = int(16000 / FPS)
        n = min(len(expr), len(audio) // hop)
        win = audio[: n * hop].reshape(n, hop) * np.hanning(hop)
        spectrum = np.abs(np.fft.rfft(win, n=4 * hop, axis=1))
        peak = np.argmax(spectrum, 1) * 16000 / (4 * hop)
        nearest = np.argmin(np.abs(np.log(peak[:, None] + 1) - np.log(CLASS_PITCH[None])), 1)
        hits += (nearest == expr[:n]).sum()
        total += n
        loud.append(np.sqrt((audio[: n * hop].reshape(n, hop) ** 2).mean(1)))
        val.append(va[:n, 0])
    assert hits / total > 0.8, "tone pitch must reveal the expression class"
    assert np.corrcoef(np.concatenate(loud), np.concatenate(val))[0, 1] > 0.5, "loudness must follow valence"
    assert EXPR_CLASSES[0] == "Neutral"
