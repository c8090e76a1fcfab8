"""MTCNN (facenet-pytorch weights, rebuilt and batched) against facenet-pytorch's own outputs; 5-point alignment."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from skimage.transform import SimilarityTransform

from affcli.pipeline.face_align import align_faces, box_crops, similarity_transform, template, warp_affine
from affcli.pipeline.mtcnn import MTCNN, area_crops, integral_image, mtcnn_wheel, nms_min
from affcli.pipeline.wheel_weights import WeightsFetchError, extract_member, fetch_wheel

FIXTURE = Path(__file__).parent / "fixtures" / "mtcnn_reference.npz"


@pytest.fixture(scope="module")
def ref() -> dict:
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def images(ref) -> list[np.ndarray]:
    """The fixture's images in its order: astronaut, camera (grey->RGB), then the LFW frames (grey->RGB)."""
    grey = [data.camera(), *ref["lfw_frames"]]
    return [data.astronaut()] + [np.repeat(g[..., None], 3, -1) for g in grey]


@pytest.fixture(scope="module")
def mtcnn() -> MTCNN:
    return MTCNN("cpu")  # fetches facenet-pytorch==2.6.0 into the user cache on first use


def test_matches_facenet_pytorch(mtcnn, ref, images):
    assert len(images) == len(ref["sources"]) == 6
    for i, im in enumerate(images):
        faces = mtcnn.detect(torch.from_numpy(im)[None])[0]
        sel = ref["image"] == i
        assert len(faces.boxes) == sel.sum(), ref["sources"][i]
        np.testing.assert_allclose(faces.boxes.numpy(), ref["boxes"][sel], atol=0.5)
        np.testing.assert_allclose(faces.landmarks.numpy(), ref["landmarks"][sel], atol=0.5)
        np.testing.assert_allclose(faces.scores.numpy(), ref["probs"][sel], atol=1e-3)
    assert (ref["image"] == 5).sum() == 0, "the frame of non-face LFW patches has no face"


def test_batched_equals_one_by_one(mtcnn, images):
    lfw = torch.from_numpy(np.stack(images[2:]))
    singles = [mtcnn.detect(f[None])[0] for f in lfw]
    other_shape = MTCNN("cpu", crop_batch=64)  # R-/O-Net calls of another fixed size: the same to 1e-4
    for batched, atol in ((mtcnn.detect(lfw), 0), (mtcnn.detect(lfw.permute(0, 3, 1, 2).contiguous()), 0),
                          (other_shape.detect(lfw), 1e-4)):
        assert len(batched) == len(singles) == 4
        for b, s in zip(batched, singles):
            assert len(b.boxes) == len(s.boxes)
            for x, y in zip(b, s):  # exactly: a frame's faces do not depend on its batch-mates (stream = extract)
                torch.testing.assert_close(x, y, atol=atol, rtol=0)
    pair = mtcnn.detect(np.stack(images[:2]))
    assert [len(p.boxes) for p in pair] == [1, 1]


def test_largest_face(mtcnn, ref, images):
    lfw = torch.from_numpy(np.stack(images[2:]))
    one = mtcnn.largest_face(lfw)
    assert one.valid.tolist() == [True, True, True, False]
    assert torch.isnan(one.boxes[3]).all() and torch.isnan(one.landmarks[3]).all() and torch.isnan(one.scores[3])
    for f in range(3):
        sel = ref["image"] == f + 2
        area = (ref["boxes"][sel, 2] - ref["boxes"][sel, 0]) * (ref["boxes"][sel, 3] - ref["boxes"][sel, 1])
        np.testing.assert_allclose(one.boxes[f].numpy(), ref["boxes"][sel][area.argmax()], atol=0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(mtcnn, images):
    gpu = MTCNN("cuda")
    frames = torch.from_numpy(np.stack(images[2:])).cuda()
    for g, c in zip(gpu.detect(frames), mtcnn.detect(frames.cpu())):
        assert g.boxes.is_cuda and len(g.boxes) == len(c.boxes)
        torch.testing.assert_close(g.boxes.cpu(), c.boxes, atol=0.05, rtol=0)


def test_area_crops_are_interpolate_area():
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 3, 50, 70), dtype=torch.uint8, generator=g)
    rects = torch.tensor([[0, 0, 70, 50], [5, 7, 17, 15], [30, 2, 31, 49], [10, 10, 60, 48]])
    frame = torch.tensor([0, 1, 0, 1])
    got = area_crops(integral_image(frames), frame, rects, 24)
    for k, (x0, y0, x1, y1) in enumerate(rects.tolist()):
        want = F.interpolate(frames[frame[k], None, :, y0:y1, x0:x1].float(), size=(24, 24), mode="area")[0]
        torch.testing.assert_close(got[k], want, atol=1e-3, rtol=0)


def _nms_min_reference(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, thr: float) -> set[int]:
    """facenet-pytorch's nms_numpy('Min') per group, written out plainly."""
    keep = set()
    for gid in np.unique(groups):
        idx = list(np.flatnonzero(groups == gid)[np.argsort(-scores[groups == gid], kind="stable")])
        while idx:
            i, idx = idx[0], idx[1:]
            keep.add(int(i))
            b = boxes[idx]
            inter = (np.clip(np.minimum(boxes[i, 2], b[:, 2]) - np.maximum(boxes[i, 0], b[:, 0]) + 1, 0, None)
                     * np.clip(np.minimum(boxes[i, 3], b[:, 3]) - np.maximum(boxes[i, 1], b[:, 1]) + 1, 0, None))
            area = lambda x: (x[..., 2] - x[..., 0] + 1) * (x[..., 3] - x[..., 1] + 1)  # noqa: E731
            idx = [j for j, o in zip(idx, inter / np.minimum(area(boxes[i]), area(b))) if o <= thr]
    return keep


def test_nms_min_is_greedy():
    rng = np.random.default_rng(1)
    for _ in range(5):
        xy = rng.uniform(0, 60, (40, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (40, 2))], 1).astype(np.float32)
        scores, groups = rng.permutation(40).astype(np.float32), rng.integers(0, 3, 40)
        got = nms_min(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups), 0.7)
        want = _nms_min_reference(boxes, scores, groups, 0.7)
        assert set(got.tolist()) == want and 0 < len(want) < 40


def test_similarity_is_umeyama_and_lands_on_template():
    g = torch.Generator().manual_seed(0)
    dst = template(112)
    src = torch.rand(6, 5, 2, generator=g) * 200 + 20
    m = similarity_transform(src, dst)
    for s, mm in zip(src.double().numpy(), m.double().numpy()):
        np.testing.assert_allclose(mm, SimilarityTransform.from_estimate(s, dst.double().numpy()).params[:2], atol=1e-4)
    angle = torch.tensor(0.4)
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])]) * 2.5
    exact = (template(112) - 56) @ rot.T + torch.tensor([150.0, 120.0])
    noisy = exact + torch.randn(5, 2, generator=g) * 0.5
    m = similarity_transform(torch.stack([exact, noisy]), dst)
    mapped = torch.einsum("nij,npj->npi", m[:, :, :2], torch.stack([exact, noisy])) + m[:, None, :, 2]
    assert (mapped[0] - dst).norm(dim=1).max() < 1e-3
    assert (mapped[1] - dst).norm(dim=1).max() < 1.0
    torch.testing.assert_close(torch.linalg.det(m[0, :, :2]), torch.tensor(1 / 2.5**2), atol=1e-5, rtol=0)
    assert template(224)[0].tolist() == pytest.approx([38.2946 * 2, 51.6963 * 2])


def test_warp_is_bilinear_by_value():
    h, w = 90, 130
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ramp = torch.stack([2 * xx + yy, xx - 3 * yy + 300, torch.full_like(xx, 7)], 0)[None].repeat(2, 1, 1, 1)
    # the second warp leaves the frame
    m = torch.tensor([[[0.9, 0.3, -40.0], [-0.3, 0.9, 10.0]], [[1.5, 0.0, 15.0], [0.0, 1.5, 6.0]]])
    out = warp_affine(ramp, m, 40)  # m[0] shrinks (scale 0.95): 2x2 supersampling, still exact on a linear ramp
    inv = torch.linalg.inv(torch.cat([m, torch.tensor([[[0.0, 0, 1]]]).expand(2, 1, 3)], 1))
    v, u = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    src = torch.einsum("nij,jhw->nihw", inv[:, :2], torch.stack([u, v, torch.ones_like(u)]))
    inside = (src[:, 0] >= 1) & (src[:, 0] <= w - 2) & (src[:, 1] >= 1) & (src[:, 1] <= h - 2)
    want = torch.stack([2 * src[:, 0] + src[:, 1], src[:, 0] - 3 * src[:, 1] + 300, torch.full_like(src[:, 0], 7)], 1)
    assert inside[0].all() and inside[1].float().mean() > 0.4
    torch.testing.assert_close(out.permute(0, 2, 3, 1)[inside], want.permute(0, 2, 3, 1)[inside], atol=2e-3, rtol=0)
    far = (src[:, 0] < -2) | (src[:, 1] < -2) | (src[:, 0] > w + 1) | (src[:, 1] > h + 1)
    assert far.any() and (out.permute(0, 2, 3, 1)[far] == 0).all()


def test_align_faces_moves_landmarks_onto_template():
    angle, scale, centre = 0.35, 1.8, torch.tensor([170.0, 110.0])
    rot = torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=torch.float32) * scale
    marks = (template(112) - 56) @ rot.T + centre
    yy, xx = torch.meshgrid(torch.arange(240.0), torch.arange(320.0), indexing="ij")
    blobs = sum(torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2)) for x, y in marks.tolist())
    frames = (blobs * 255).clamp(0, 255).to(torch.uint8)[None, None].repeat(2, 3, 1, 1)
    landmarks = torch.stack([marks, torch.full((5, 2), float("nan"))])
    crops, m = align_faces(frames, landmarks, size=112)
    assert crops.shape == (2, 3, 112, 112) and torch.isnan(m[1]).all() and (crops[1] == 0).all()
    v, u = torch.meshgrid(torch.arange(112.0), torch.arange(112.0), indexing="ij")
    for tx, ty in template(112).tolist():
        win = ((u - tx).abs() <= 4) & ((v - ty).abs() <= 4)
        wgt = crops[0, 0] * win
        found = torch.stack([(wgt * u).sum(), (wgt * v).sum()]) / wgt.sum()
        assert (found - torch.tensor([tx, ty])).norm() < 0.3, (found, tx, ty)


def test_box_crops_with_margin():
    h, w = 100, 120
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    frame = torch.stack([xx, yy, xx + yy], 0)[None]
    boxes = torch.tensor([[40.0, 30.0, 80.0, 60.0], [float("nan")] * 4, [-30.0, -30.0, 10.0, 10.0]])
    crops = box_crops(frame, boxes, size=32, margin=0.25, frame_index=torch.zeros(3, dtype=torch.long))
    assert crops.shape == (3, 3, 32, 32)
    side = 40 * 1.5  # max(w, h) x (1 + 2 x margin), centred on (60, 45)
    centres = 60 - side / 2 + (torch.arange(32) + 0.5) * side / 32
    torch.testing.assert_close(crops[0, 0, 5], centres, atol=0.02, rtol=0)
    torch.testing.assert_close(crops[0, 1, :, 5], 45 - 60 + centres, atol=0.02, rtol=0)
    assert (crops[1] == 0).all()
    assert (crops[2, :, :8, :8] == 0).all() and (crops[2, :, -4:, -4:] > 0).all()


def test_fetch_failure_is_one_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("AFFCLI_MTCNN_WHEEL", str(tmp_path / "nowhere.whl"))
    with pytest.raises(WeightsFetchError, match="AFFCLI_MTCNN_WHEEL points at a missing file") as e:
        MTCNN("cpu")
    assert "\n" not in str(e.value)
    not_a_wheel = tmp_path / "facenet_pytorch-2.6.0-py3-none-any.whl"
    not_a_wheel.write_text("not a zip")
    monkeypatch.setenv("AFFCLI_MTCNN_WHEEL", str(not_a_wheel))
    with pytest.raises(WeightsFetchError, match="not a readable wheel"):
        MTCNN("cpu")
    monkeypatch.delenv("AFFCLI_MTCNN_WHEEL")
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho 'Looking in indexes: nowhere' >&2\n"
                           "echo 'ERROR: No matching distribution found for facenet-pytorch==2.6.0' >&2\nexit 1\n")
    fake_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    with caplog.at_level(logging.WARNING, logger="affcli.weights"), pytest.raises(WeightsFetchError) as e:
        MTCNN("cpu")
    msg = str(e.value)
    assert "\n" not in msg and "pip download facenet-pytorch==2.6.0" in msg and "No matching distribution" in msg
    assert any("fetching facenet-pytorch==2.6.0" in r.getMessage() for r in caplog.records)
    assert not list((tmp_path / "cache").rglob("*.whl"))


def test_wheel_from_env_and_extraction(monkeypatch, tmp_path, mtcnn):
    wheel = mtcnn_wheel()
    monkeypatch.setenv("AFFCLI_MTCNN_WHEEL", str(wheel))
    assert mtcnn_wheel() == wheel
    assert fetch_wheel("facenet-pytorch", "2.6.0", env_var="AFFCLI_MTCNN_WHEEL") == wheel
    out = extract_member(wheel, "facenet_pytorch/data/pnet.pt", tmp_path)
    assert out == tmp_path / "facenet_pytorch-2.6.0" / "facenet_pytorch/data/pnet.pt"
    state = torch.load(out, weights_only=True)
    torch.testing.assert_close(state["conv1.weight"], mtcnn.pnet.conv1.weight)
    with pytest.raises(WeightsFetchError, match="has no facenet_pytorch/data/missing.pt"):
        extract_member(wheel, "facenet_pytorch/data/missing.pt", tmp_path)
