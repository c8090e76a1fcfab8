"""Face detection and cropping on a real face photo (scikit-image's astronaut) pasted at known places: the Haar
detector (`--face haar`) and the crops extract makes from its boxes (`face_crops`), plus the letterboxes."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch

from affcli.pipeline.crop_settings import CropSettings
from affcli.pipeline.crops import face_crops, whole_frames
from affcli.pipeline.detectors import DETECTORS
from affcli.synthetic.media import _drawn_face, face_patch


def _frame_with_face(w: int, h: int, x0: int, y0: int, side: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
    patch = cv2.resize(face_patch(), (side, side), interpolation=cv2.INTER_AREA)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    frame[fy0 : y0 + side, fx0 : x0 + side] = patch[fy0 - y0 :, fx0 - x0 :][: h - fy0, : w - fx0]
    return frame


def _haar(threads: int = 2, **options):
    return DETECTORS.build("haar", "cpu", threads, **options)


def _crop(detector, frames: np.ndarray, size: int, margin: float = 0.25):
    """Host frames [B,H,W,3] -> (box crops [B,size,size,3] as extract makes them, valid [B], boxes [B,4])."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    d = detector(x)
    crops = face_crops(x, d.boxes, d.landmarks, d.valid, size, align=False, margin=margin)
    return crops.permute(0, 2, 3, 1).numpy(), d.valid.numpy(), d.boxes.numpy()


@pytest.fixture(scope="module")
def haar():
    det = _haar()
    yield det
    det.close()


def test_face_found_and_crop_centred_on_it(haar) -> None:
    frame = _frame_with_face(320, 240, 150, 60, 120)
    crops, valid, boxes = _crop(haar, frame[None], 96)
    assert valid.tolist() == [True] and crops.shape == (1, 96, 96, 3) and crops.dtype == np.uint8
    x0, y0, x1, y1 = boxes[0]
    face_centre = np.array([150 + 60, 60 + 60])  # the photo's face sits at the centre of the patch
    assert np.abs(np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - face_centre).max() < 12
    assert 40 < x1 - x0 < 110
    again = _haar(1).detect(cv2.resize(crops[0], (192, 192)))
    assert again is not None
    centre = (again[:2] + again[2:]) / 2
    assert np.abs(centre - 96).max() < 192 * 0.12


def test_noise_has_no_face_and_gives_zeros(haar) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (2, 120, 160, 3), dtype=np.uint8)
    face = _frame_with_face(160, 120, 40, 20, 80)
    crops, valid, boxes = _crop(haar, np.stack([noise[0], face, noise[1]]), 96)
    assert valid.tolist() == [False, True, False]
    assert crops[[0, 2]].max() == 0 and crops[1].max() > 0
    assert np.isnan(boxes[[0, 2]]).all() and np.isfinite(boxes[1]).all()


def test_box_in_full_resolution_pixels_when_detecting_downscaled() -> None:
    frame = _frame_with_face(1280, 720, 800, 300, 300)
    crops, valid, boxes = _crop(_haar(1, detect_width=320), frame[None], 64)
    assert valid[0]
    centre = (boxes[0, :2] + boxes[0, 2:]) / 2
    assert np.abs(centre - np.array([950, 450])).max() < 30
    assert boxes[0, 2] - boxes[0, 0] > 120


def test_face_at_border_is_zero_padded(haar) -> None:
    frame = _frame_with_face(160, 120, -15, -15, 90)
    crops, valid, boxes = _crop(haar, frame[None], 96)
    assert valid[0]
    assert (boxes[0] >= 0).all()
    assert crops[0, :3, :3].max() == 0 and crops[0, 48, 48].max() > 0


def test_threads_do_not_change_results() -> None:
    frames = np.stack([_frame_with_face(200, 150, 30 + 10 * i, 20, 90, seed=i) for i in range(6)])
    one = _crop(_haar(1), frames, 64)
    two_threads = _haar(2)
    two = _crop(two_threads, frames, 64)
    two_threads.close()
    assert one[1].all()
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_drawn_fallback_face_is_detected(haar) -> None:
    frame = np.full((120, 160, 3), 90, np.uint8)
    frame[20:100, 40:120] = cv2.resize(_drawn_face(), (80, 80), interpolation=cv2.INTER_AREA)
    assert _crop(haar, frame[None], 64)[1].tolist() == [True]


def test_options_enter_the_crop_fingerprint_and_the_detector_pickles() -> None:
    fp = CropSettings("video", 112, "haar", margin=0.4).fingerprint()
    assert fp["size"] == 112 and fp["margin"] == 0.4 and "haarcascade" in fp["face_detector"]
    assert fp["opencv"] == cv2.__version__ and (fp["detect_width"], fp["min_neighbors"]) == (320, 5)
    assert fp != CropSettings("video", 112, "haar", margin=0.3).fingerprint()
    assert fp != CropSettings("video", 112, "haar", {"min_neighbors": 3}, margin=0.4).fingerprint()
    det = _haar(2)
    clone = pickle.loads(pickle.dumps(det))
    frame = _frame_with_face(160, 120, 40, 20, 80)
    np.testing.assert_array_equal(_crop(clone, frame[None], 64)[0], _crop(det, frame[None], 64)[0])
    with pytest.raises(ValueError, match="bad options"):
        _haar(1, detect_width=8)


def test_whole_frames_letterbox() -> None:
    frames = np.full((3, 120, 160, 3), 200, np.uint8)
    out = whole_frames(frames, 64)
    assert out.shape == (3, 64, 64, 3)
    assert out[:, :8].max() == 0 and out[:, 56:].max() == 0
    assert (out[:, 8:56] == 200).all()
    tall = whole_frames(np.full((1, 100, 50, 3), 90, np.uint8), 20)
    assert tall[0, :, :5].max() == 0 and (tall[0, :, 5:15] == 90).all()


def test_detect_every_detects_key_frames_only_and_tracks_between() -> None:
    from affcli.pipeline.tracking import Tracker

    frames = np.stack([_frame_with_face(320, 240, 60 + 4 * i, 40, 120, seed=i) for i in range(8)])
    det = _haar(1)
    seen = []
    tracker = Tracker(lambda x: (seen.append(len(x)), det(x))[1], every=4)
    done, track = tracker.push(torch.from_numpy(frames).permute(0, 3, 1, 2), final=True)
    assert len(done) == 8 and bool(track.valid.all())
    assert sum(seen) == 3 and track.detected.tolist() == [True, False, False, False, True, False, False, True]
    assert not torch.equal(track.boxes[4], track.boxes[0])


def test_device_path_functions_run_on_cpu_tensors() -> None:
    import torch

    from affcli.pipeline.backbones import build_backbone
    from affcli.pipeline.crops import letterbox
    from affcli.pipeline.face_align import template

    frames = torch.zeros(3, 3, 120, 160, dtype=torch.uint8)
    frames[:, :, 40:80, 60:100] = 200
    lb = letterbox(frames, 64)
    assert lb.shape == (3, 3, 64, 64) and lb.dtype == torch.uint8
    assert not lb[:, :, :8].any() and lb[:, :, 32, 32].eq(200).all(), "zero bars above, the picture in the middle"
    boxes = torch.tensor([[60.0, 40, 100, 80], [60, 40, 100, 80], [float("nan")] * 4])
    marks = template(40)[None].expand(3, 5, 2) + torch.tensor([60.0, 40.0])
    valid = torch.tensor([True, True, False])
    aligned = face_crops(frames, boxes, marks, valid, 32, align=True, margin=0.0)
    boxed = face_crops(frames, boxes, torch.full((3, 5, 2), float("nan")), valid, 32, align=False, margin=0.0)
    for crops in (aligned, boxed):
        assert crops.shape == (3, 3, 32, 32) and crops.dtype == torch.uint8 and not crops[2].any()
    assert boxed[0].float().mean() > 190, "a margin-free box crop is the bright square only"
    b = build_backbone("clip:tiny", "cpu")
    from_tensor = b.embed(b.preprocess(boxed))
    from_array = b.embed(b.preprocess(boxed.permute(0, 2, 3, 1).numpy()))
    torch.testing.assert_close(from_tensor, from_array)
