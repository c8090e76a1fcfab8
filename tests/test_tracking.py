"""Face tracks between detections (pipeline/tracking.py) with a scripted detector over synthetic frames."""
from __future__ import annotations

import numpy as np
import torch

from affcli.pipeline.tracking import Tracker, box_iou_pairs


def _frames(n: int, scene: list[int]) -> torch.Tensor:
    """Frames [n,3,8,8]: pixel (0,0,0) holds the frame index, everything else the scene's grey level."""
    x = torch.tensor(scene, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 8, 8).clone()
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return x


class Scripted:
    """A detector that returns boxes[i] for frame i (NaN = no face) and records which frames it saw."""

    def __init__(self, boxes: np.ndarray):
        self.boxes, self.seen = torch.as_tensor(boxes, dtype=torch.float32), []

    def __call__(self, frames: torch.Tensor):
        idx = frames[:, 0, 0, 0].long()
        self.seen += idx.tolist()
        b = self.boxes[idx]
        valid = torch.isfinite(b).all(1)
        marks = b[:, None, :2].expand(-1, 5, 2) + torch.arange(5.0)[None, :, None]
        return b, valid.float(), torch.where(valid[:, None, None], marks, torch.nan), valid


def _moving(n: int, x0: float = 10.0, step: float = 2.0) -> np.ndarray:
    x = x0 + step * np.arange(n)
    return np.stack([x, np.full(n, 20.0), x + 40, np.full(n, 60.0)], 1)


def _run(tracker: Tracker, frames: torch.Tensor, chunk: int):
    parts, tracks = [], []
    for i in range(0, len(frames), chunk):
        f, t = tracker.push(frames[i:i + chunk], final=i + chunk >= len(frames))
        parts.append(f)
        tracks.append(t)
    out = tracks[0]
    for t in tracks[1:]:
        out = out.cat(t)
    assert torch.equal(torch.cat(parts), frames), "resolved frames come back in order, each once"
    return out


def test_track_is_interpolated_between_keys_and_keeps_a_box_through_a_gap():
    n = 13
    boxes = _moving(n)
    boxes[6] = np.nan  # the detector would miss frame 6; it is never asked, the track carries through it
    det = Scripted(boxes)
    track = _run(Tracker(det, every=4), _frames(n, [50] * n), chunk=5)
    assert sorted(det.seen) == [0, 4, 8, 12]
    assert track.valid.all() and track.detected.tolist() == [i % 4 == 0 for i in range(n)]
    np.testing.assert_allclose(track.boxes.numpy(), _moving(n), atol=1e-4)
    np.testing.assert_allclose(track.landmarks[6].numpy(), _moving(n)[6, None, :2] + np.arange(5.0)[:, None], atol=1e-4)


def test_cut_splits_the_track_and_is_redetected():
    n = 12
    boxes = _moving(n)
    boxes[7:] = [100.0, 5.0, 140.0, 45.0]  # a new shot from frame 7 with the face elsewhere
    det = Scripted(boxes)
    track = _run(Tracker(det, every=5), _frames(n, [50] * 7 + [200] * 5), chunk=4)
    assert {6, 7} <= set(det.seen), "the frames on both sides of a cut are detected"
    assert sorted(det.seen) == [0, 5, 6, 7, 10, 11]
    np.testing.assert_allclose(track.boxes[:7].numpy(), _moving(n)[:7], atol=1e-4)
    np.testing.assert_allclose(track.boxes[7:].numpy(), boxes[7:], atol=1e-4)


def test_lost_track_is_redetected_inside_the_interval():
    n = 9
    boxes = _moving(n)
    boxes[6:] = [150.0, 100.0, 190.0, 140.0]  # the face jumps between keys 4 and 8 without a cut: IoU 0
    boxes[2] = np.nan                           # and a key-linked interval with a detector miss stays linked
    det = Scripted(boxes)
    track = _run(Tracker(det, every=4, iou=0.4), _frames(n, [50] * n), chunk=9)
    assert sorted(det.seen) == [0, 4, 5, 6, 7, 8]
    np.testing.assert_allclose(track.boxes[5:].numpy(), boxes[5:], atol=1e-4)
    assert track.valid.all()


def test_face_appearing_between_keys_is_found_and_faceless_intervals_cost_nothing():
    n = 13
    boxes = np.full((n, 4), np.nan)
    boxes[6:] = _moving(n)[6:]
    det = Scripted(boxes)
    track = _run(Tracker(det, every=4), _frames(n, [50] * n), chunk=13)
    assert sorted(det.seen) == [0, 4, 5, 6, 7, 8, 12], "0..4 has no face at either key: not re-detected"
    assert track.valid.tolist() == [False] * 6 + [True] * 7


def test_result_does_not_depend_on_batching():
    n = 23
    boxes = _moving(n, step=3.0)
    boxes[9:12] = np.nan
    frames = _frames(n, [50] * 15 + [120] * 8)
    a = _run(Tracker(Scripted(boxes), every=3), frames, chunk=23)
    b = _run(Tracker(Scripted(boxes), every=3), frames, chunk=2)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, equal_nan=True)


def test_every_one_detects_every_frame_and_holds_nothing_back():
    boxes = _moving(6)
    det = Scripted(boxes)
    tr = Tracker(det, every=1)
    f, t = tr.push(_frames(6, [50] * 6))
    assert len(f) == 6 and tr.pending is None and det.seen == list(range(6))


def test_box_iou_pairs():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [float("nan")] * 4])
    torch.testing.assert_close(box_iou_pairs(a, b), torch.tensor([1.0, 1 / 3, 0.0]))
