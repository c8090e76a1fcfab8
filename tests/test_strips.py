"""Whole frames are never made float at once: the detector's area downscale, the tracker's thumbnails, the letterbox and
the face warp read uint8 frames in strips (or only the sampled pixels), and give what the whole-frame float versions
gave. The old versions are kept here as references. Also the decoder's thread cap that keeps FFmpeg's own frames
within a batch's share at 8K."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from affcli.pipeline.crops import letterbox
from affcli.pipeline.face_align import (_homogeneous, align_faces, similarity_transform, supersampling, template,
                                        warp_affine)
from affcli.pipeline.strips import area_downscale, area_sums, resize_aa
from affcli.pipeline.tracking import thumbnails
from affcli.synthetic.media import render_faces, smooth_background


# ---- the whole-frame float versions these replace -------------------------------------------------------------------
def old_thumbnails(frames: torch.Tensor, side: int = 16) -> torch.Tensor:
    grey = frames.float().mean(1, keepdim=True) / 255.0
    return F.adaptive_avg_pool2d(grey, side).flatten(1)


def old_letterbox(frames: torch.Tensor, size: int) -> torch.Tensor:
    n, _, h, w = frames.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = frames.new_zeros(n, 3, size, size)
    x = F.interpolate(frames.float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[:, :, top:top + nh, left:left + nw] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def old_warp_affine(frames: torch.Tensor, matrices: torch.Tensor, size: int, frame_index=None, supersample=None):
    x = (frames if frame_index is None else frames[frame_index]).float()
    k = len(x)
    if supersample is None:
        ks = supersampling(matrices)
        levels = ks.unique().tolist()
        if len(levels) > 1:
            out = x.new_empty(k, x.shape[1], size, size)
            for level in levels:
                sel = (ks == level).nonzero().flatten()
                out[sel] = old_warp_affine(x[sel], matrices[sel], size, supersample=int(level))
            return out
        supersample = int(levels[0])
    m = matrices.to(torch.float64)
    out = size * supersample
    h, w = x.shape[-2:]
    to_pix = torch.tensor([[size / 2.0, 0, size / 2.0 - 0.5], [0, size / 2.0, size / 2.0 - 0.5], [0, 0, 1]],
                          dtype=torch.float64)
    to_norm = torch.tensor([[2.0 / w, 0, 1.0 / w - 1], [0, 2.0 / h, 1.0 / h - 1], [0, 0, 1]], dtype=torch.float64)
    theta = to_norm @ torch.linalg.inv(_homogeneous(m)) @ to_pix
    grid = F.affine_grid(theta[:, :2].to(x.dtype), [k, x.shape[1], out, out], align_corners=False)
    crops = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(crops, supersample) if supersample > 1 else crops


def old_mtcnn_input(frames: torch.Tensor, detect_width: int = 640) -> torch.Tensor:
    h, w = frames.shape[-2:]
    scale = min(1.0, detect_width / w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(frames.float(), size=size, mode="area").round_().clamp_(0, 255).to(torch.uint8)


# ---- synthetic frames --------------------------------------------------------------------------------------------
def noise_frames(n: int, h: int, w: int, seed: int = 0, channels_last: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    hwc = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g)
    x = hwc.permute(0, 3, 1, 2)  # as the decoder hands them on (a view of [N,H,W,3])
    return x if channels_last else x.contiguous()


def face_frames(n: int, w: int, h: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Faces moving over a smooth background: frames [N,3,H,W] uint8, their centres [N,2] and sides [N]."""
    rng = np.random.default_rng(seed)
    bg = smooth_background(rng, w, h)
    centres = np.stack([rng.uniform(0.3, 0.7, n) * w, rng.uniform(0.35, 0.65, n) * h], 1)
    sides = rng.uniform(0.2, 0.45, n) * min(w, h)
    ones = np.ones(n, np.float32)
    frames = render_faces(bg, centres, sides, rng.uniform(0.8, 1.1, (n, 3)).astype(np.float32), ones, ones > 0)
    return torch.from_numpy(frames).permute(0, 3, 1, 2), centres, sides


SIZES = [((240, 320), (90, 120)), ((1080, 1920), (360, 640)), ((37, 101), (13, 29)), ((481, 641), (16, 16)),
         ((100, 60), (100, 60)), ((50, 40), (7, 40))]


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("hw,out", SIZES)
def test_area_downscale_is_interpolate_area_bit_for_bit(hw, out, channels_last):
    frames = noise_frames(2, *hw, seed=hw[0], channels_last=channels_last)
    ref = F.interpolate(frames.float(), size=out, mode="area")
    for strip in (1, 2**16, 2**30):  # one row per strip ... the whole frame in one strip
        assert torch.equal(area_downscale(frames, out, strip_bytes=strip), ref)


def test_area_sums_are_integer_bin_sums():
    frames = noise_frames(1, 9, 7)
    sums, kh, kw = area_sums(frames, (4, 3))
    assert sums.dtype == torch.int64 and kh.tolist() == [3, 3, 3, 3] and kw.tolist() == [3, 3, 3]
    assert int(sums[0, 1, 2, 0]) == int(frames[0, 1, 4:7, 0:3].to(torch.int64).sum())
    with pytest.raises(TypeError):
        area_sums(frames.float(), (4, 3))


@pytest.mark.parametrize("hw,out", [((1080, 1920), (126, 224)), ((240, 320), (168, 224)), ((120, 160), (168, 224)),
                                    ((31, 400), (17, 224)), ((400, 31), (224, 17))])
def test_resize_aa_is_the_whole_frame_antialiased_resize(hw, out):
    frames = noise_frames(2, *hw, seed=3)
    ref = F.interpolate(frames.float(), size=out, mode="bilinear", antialias=True, align_corners=False)
    for strip in (1, 2**16, 2**30):
        new = resize_aa(frames, out, strip_bytes=strip)
        assert new.shape == ref.shape
        assert (new - ref).abs().max().item() <= 1e-3  # float rounding of the same separable passes (0.0 here)


@pytest.mark.parametrize("w,h", [(320, 240), (1280, 720), (400, 1000), (33, 17)])
def test_letterbox_equals_the_whole_frame_letterbox(w, h):
    frames, _, _ = face_frames(3, w, h, seed=w)
    new, ref = letterbox(frames, 224), old_letterbox(frames, 224)
    assert new.dtype == torch.uint8 and new.shape == ref.shape
    assert (new.int() - ref.int()).abs().max().item() <= 1
    assert (new != ref).float().mean().item() <= 1e-4


@pytest.mark.parametrize("w,h", [(320, 240), (1920, 1080), (17, 33)])
def test_thumbnails_equal_the_whole_frame_thumbnails(w, h):
    frames, _, _ = face_frames(4, w, h, seed=h)
    noise = noise_frames(2, h, w, seed=1)
    for x in (frames, noise):
        new, ref = thumbnails(x), old_thumbnails(x)
        exact = F.adaptive_avg_pool2d(x.double().mean(1, keepdim=True) / 255.0, 16).flatten(1)
        assert new.shape == ref.shape == (len(x), 256) and new.dtype == torch.float32
        assert (new.double() - exact).abs().max().item() <= 1e-7  # exact sums, one rounding to float32
        assert (new - ref).abs().max().item() <= 5e-5  # the old float32 sums over a bin drift by up to ~2e-5


def test_detector_input_is_the_whole_frame_area_downscale():
    frames, _, _ = face_frames(3, 1920, 1080, seed=5)
    h, w = frames.shape[-2:]
    size = (round(h * 640 / w), 640)
    new = area_downscale(frames, size).round_().clamp_(0, 255).to(torch.uint8)
    assert torch.equal(new, old_mtcnn_input(frames))


def test_mtcnn_detections_are_unchanged_on_synthetic_faces():
    from affcli.pipeline.detectors import DETECTORS

    det = DETECTORS.build("mtcnn", "cpu", 1)
    frames, centres, _ = face_frames(4, 1600, 900, seed=7)
    new = det(frames)
    old = det.mtcnn.largest_face(old_mtcnn_input(frames, det.detect_width))
    scale = det.detect_width / 1600
    assert bool(new.valid.all()) and torch.equal(new.valid, old.valid)
    assert torch.equal(new.boxes, old.boxes / scale) and torch.equal(new.landmarks, old.landmarks / scale)
    assert torch.equal(new.scores, torch.nan_to_num(old.scores, nan=0.0))
    found = ((new.boxes[:, :2] + new.boxes[:, 2:]) / 2).numpy()
    assert np.abs(found - centres).max() < 0.1 * 900  # and they are the faces


def _warp_cases(w: int, h: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Landmarks of faces of several sizes (shrink levels 1..4 in one batch), some partly outside the frame."""
    g = torch.Generator().manual_seed(seed)
    base = template(112)
    k = 8
    scale = torch.tensor([0.5, 0.9, 1.0, 1.6, 2.5, 3.5, 5.0, 2.0])[:k] * min(w, h) / 400
    angle = torch.rand(k, generator=g) - 0.5
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], 1), torch.stack([angle.sin(), angle.cos()], 1)], 1)
    centre = torch.rand(k, 2, generator=g) * torch.tensor([w, h]) * 1.2 - torch.tensor([w, h]) * 0.1
    marks = (base - 56)[None] @ rot.transpose(1, 2) * scale[:, None, None] + centre[:, None]
    marks += torch.randn(k, 5, 2, generator=g) * 0.5
    return marks, similarity_transform(marks, template(112)), torch.randint(0, 3, (k,), generator=g)


@pytest.mark.parametrize("w,h", [(640, 360), (1920, 1080), (300, 500)])
@pytest.mark.parametrize("kind", ["faces", "noise"])
def test_warp_affine_equals_the_whole_frame_warp(w, h, kind):
    frames = face_frames(3, w, h, seed=w)[0] if kind == "faces" else noise_frames(3, h, w, seed=h)
    _, m, idx = _warp_cases(w, h, seed=w + h)
    assert len(supersampling(m).unique()) > 1
    new, ref = warp_affine(frames, m, 112, frame_index=idx), old_warp_affine(frames, m, 112, frame_index=idx)
    assert new.shape == ref.shape and new.dtype == torch.float32
    # the same arithmetic as PyTorch's vectorised CPU kernel: 0.0 on x86 AVX2 builds; a build whose kernel rounds
    # differently stays within float rounding of coordinates
    assert (new - ref).abs().max().item() <= 0.05
    rounded = (new.round().clamp(0, 255) != ref.round().clamp(0, 255)).float().mean().item()
    assert rounded <= 1e-3
    hwc = frames.permute(0, 2, 3, 1).contiguous()  # [N,H,W,3] input too
    assert torch.equal(warp_affine(hwc, m, 112, frame_index=idx), new)
    one = warp_affine(frames, m[:1], 112, frame_index=idx[:1])  # a crop does not depend on its batch-mates
    assert torch.equal(one, new[:1])


def test_align_faces_on_frames_keeps_zero_crops_for_missing_landmarks():
    frames, _, _ = face_frames(2, 640, 360, seed=2)
    marks, _, _ = _warp_cases(640, 360, seed=1)
    marks = marks[:2].clone()
    marks[1] = float("nan")
    crops, mats = align_faces(frames, marks, 112)
    assert crops.shape == (2, 3, 112, 112) and crops[0].abs().sum() > 0 and crops[1].abs().sum() == 0
    assert torch.isnan(mats[1]).all()


def test_no_whole_frame_float_copy_at_8k():
    """An 8K frame (95 MiB uint8, 380 MiB as float32) through the detector's downscale, the thumbnails, a face warp
    and the letterbox: the process peak grows by far less than one float frame."""
    code = textwrap.dedent("""
        import json, resource, torch
        from affcli.pipeline.crops import letterbox
        from affcli.pipeline.face_align import align_faces, template
        from affcli.pipeline.strips import area_downscale
        from affcli.pipeline.tracking import thumbnails
        frames = torch.full((1, 4320, 7680, 3), 7, dtype=torch.uint8).permute(0, 3, 1, 2)
        frames[:, :, ::2].fill_(200)
        marks = (template(112) * 8 + torch.tensor([3000.0, 1500.0]))[None]
        area_downscale(frames[:, :, :8], (1, 640)); align_faces(frames[:, :, :8], marks, 112)  # warm up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        small = area_downscale(frames, (360, 640))
        th = thumbnails(frames)
        crops, _ = align_faces(frames, marks, 112)
        box = letterbox(frames, 224)
        grow = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(json.dumps({"grow_mib": grow, "small": float(small.mean()), "crop_min": float(crops.min()),
                          "box": float(box[:, :, 60:160].float().mean())}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(res["small"] - 103.5) < 1 and res["crop_min"] >= 6.9 and abs(res["box"] - 103.5) < 1  # it did the work
    assert res["grow_mib"] < 120, res  # one float32 8K frame alone is 380 MiB


def test_decoder_threads_fit_the_batch_share():
    """FFmpeg's frame threads each hold a decoded frame beside the batches: with auto threads and a byte budget, no
    more threads than RGB frames fit one batch's share (8K: 1; 4K and below keep FFmpeg's choice by default)."""
    from types import SimpleNamespace

    from affcli.pipeline.config import ExtractConfig
    from affcli.pipeline.media import AUTO_THREADS, decoder_threads

    share = ExtractConfig(cache="-", backbones=["clip:tiny"]).batch_bytes()
    ctx = lambda w, h: SimpleNamespace(width=w, height=h)  # noqa: E731
    assert decoder_threads(ctx(7680, 4320), 0, share) == 1
    assert decoder_threads(ctx(3840, 2160), 0, share) == (0 if share // (3 * 3840 * 2160) >= AUTO_THREADS else
                                                          share // (3 * 3840 * 2160))
    assert decoder_threads(ctx(1920, 1080), 0, share) == 0
    assert decoder_threads(ctx(7680, 4320), 0, None) == 0     # no budget: FFmpeg's choice
    assert decoder_threads(ctx(7680, 4320), 4, share) == 4    # an explicit count is kept
    assert decoder_threads(ctx(320, 240), 0, 2 * 3 * 320 * 240 + 5) == (0 if AUTO_THREADS <= 2 else 2)
    assert decoder_threads(ctx(0, 0), 0, share) == 0


def test_video_frames_are_the_same_with_fewer_decoder_threads(tmp_path):
    """Capping the decoder's threads (a tight budget) decodes the very same frames."""
    from affcli.pipeline.media import iter_video_frames
    from affcli.synthetic.media import write_video

    frames = face_frames(30, 320, 240, seed=4)[0].permute(0, 2, 3, 1).numpy()
    path = write_video(tmp_path / "v.mp4", frames, 25.0)
    free = np.concatenate([f for f, _ in iter_video_frames(path, batch_size=8)])
    tight = np.concatenate([f for f, _ in iter_video_frames(path, batch_size=8, max_bytes=3 * 320 * 240 + 1)])
    assert free.shape == (30, 240, 320, 3) and np.array_equal(free, tight)
