"""Face detection and cropping on a real face photo (scikit-image's astronaut) pasted at known places."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from affcli.synthetic.media import _drawn_face, face_patch
from affcli.pipeline.faces import FaceCropper, whole_frames


def _frame_with_face(w: int, h: int, x0: int, y0: int, side: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
    patch = cv2.resize(face_patch(), (side, side), interpolation=cv2.INTER_AREA)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    frame[fy0 : y0 + side, fx0 : x0 + side] = patch[fy0 - y0 :, fx0 - x0 :][: h - fy0, : w - fx0]
    return frame


@pytest.fixture(scope="module")
def cropper() -> FaceCropper:
    with FaceCropper(size=96, margin=0.25, threads=2) as c:
        yield c


def test_face_found_and_crop_centred_on_it(cropper: FaceCropper) -> None:
    frame = _frame_with_face(320, 240, 150, 60, 120)
    crops, valid, boxes = cropper.crop_batch(frame[None])
    assert valid.tolist() == [True] and crops.shape == (1, 96, 96, 3) and crops.dtype == np.uint8
    x0, y0, x1, y1 = boxes[0]
    face_centre = np.array([150 + 60, 60 + 60])  # the photo's face sits at the centre of the patch
    assert np.abs(np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - face_centre).max() < 12
    assert 40 < x1 - x0 < 110
    again = FaceCropper(size=96, margin=0.0).detect(cv2.resize(crops[0], (192, 192)))
    assert again is not None
    centre = (again[:2] + again[2:]) / 2
    assert np.abs(centre - 96).max() < 192 * 0.12


def test_noise_has_no_face_and_gives_zeros(cropper: FaceCropper) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (2, 120, 160, 3), dtype=np.uint8)
    face = _frame_with_face(160, 120, 40, 20, 80)
    crops, valid, boxes = cropper.crop_batch(np.stack([noise[0], face, noise[1]]))
    assert valid.tolist() == [False, True, False]
    assert crops[[0, 2]].max() == 0 and crops[1].max() > 0
    assert np.isnan(boxes[[0, 2]]).all() and np.isfinite(boxes[1]).all()


def test_box_in_full_resolution_pixels_when_detecting_downscaled() -> None:
    frame = _frame_with_face(1280, 720, 800, 300, 300)
    c = FaceCropper(size=64, detect_width=320, threads=1)
    crops, valid, boxes = c.crop_batch(frame[None])
    assert valid[0]
    centre = (boxes[0, :2] + boxes[0, 2:]) / 2
    assert np.abs(centre - np.array([950, 450])).max() < 30
    assert boxes[0, 2] - boxes[0, 0] > 120


def test_face_at_border_is_zero_padded(cropper: FaceCropper) -> None:
    frame = _frame_with_face(160, 120, -15, -15, 90)
    crops, valid, boxes = cropper.crop_batch(frame[None])
    assert valid[0]
    assert (boxes[0] >= 0).all()
    assert crops[0, :3, :3].max() == 0 and crops[0, 48, 48].max() > 0


def test_threads_do_not_change_results() -> None:
    frames = np.stack([_frame_with_face(200, 150, 30 + 10 * i, 20, 90, seed=i) for i in range(6)])
    one = FaceCropper(size=64, threads=1).crop_batch(frames)
    with FaceCropper(size=64, threads=2) as c:
        two = c.crop_batch(frames)
    assert one[1].all()
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_drawn_fallback_face_is_detected(cropper: FaceCropper) -> None:
    frame = np.full((120, 160, 3), 90, np.uint8)
    frame[20:100, 40:120] = cv2.resize(_drawn_face(), (80, 80), interpolation=cv2.INTER_AREA)
    assert cropper.crop_batch(frame[None])[1].tolist() == [True]


def test_fingerprint_and_pickling() -> None:
    c = FaceCropper(size=112, margin=0.4)
    fp = c.fingerprint()
    assert fp["size"] == 112 and fp["margin"] == 0.4 and "haarcascade" in fp["face_detector"]
    assert fp != FaceCropper(size=112, margin=0.3).fingerprint()
    clone = pickle.loads(pickle.dumps(c))
    frame = _frame_with_face(160, 120, 40, 20, 80)
    np.testing.assert_array_equal(clone.crop_batch(frame[None])[0], c.crop_batch(frame[None])[0])
    with pytest.raises(ValueError, match="uint8"):
        c.crop_batch(frame.astype(np.float32)[None])


def test_whole_frames_letterbox() -> None:
    frames = np.full((3, 120, 160, 3), 200, np.uint8)
    out = whole_frames(frames, 64)
    assert out.shape == (3, 64, 64, 3)
    assert out[:, :8].max() == 0 and out[:, 56:].max() == 0
    assert (out[:, 8:56] == 200).all()
    tall = whole_frames(np.full((1, 100, 50, 3), 90, np.uint8), 20)
    assert tall[0, :, :5].max() == 0 and (tall[0, :, 5:15] == 90).all()



def test_detect_every_reuses_boxes_and_calls_detector_less() -> None:
    frames = np.stack([_frame_with_face(320, 240, 60 + 4 * i, 40, 120, seed=i) for i in range(8)])
    calls = []
    fc = FaceCropper(size=48, detect_every=4, threads=1)
    orig = fc.detect
    fc.detect = lambda f: (calls.append(1), orig(f))[1]
    crops, valid, boxes = fc.crop_batch(frames)
    assert len(calls) == 2 and valid.all()
    np.testing.assert_array_equal(boxes[1], boxes[0])
    np.testing.assert_array_equal(boxes[7], boxes[4])
    assert not np.array_equal(boxes[4], boxes[0])
    assert fc.fingerprint()["detect_every"] == 4


def test_device_path_functions_run_on_cpu_tensors() -> None:
    import torch

    from affcli.pipeline.backbones import build_backbone
    from affcli.pipeline.faces import face_crops, letterbox
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
