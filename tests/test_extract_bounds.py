"""Bounded decoding memory (issue 20, part B): decoded batches are bounded by bytes, not by a frame count, and the
face stage makes whole frames float a few at a time, so any resolution extracts within `--decode-memory-mb`.

Classes: batches of every input kind (video, frame folder, still images) at several frame sizes; the face stage's
chunked float work for every crop method (face boxes, aligned faces, tracked faces, letterbox, pre-cropped), equal to
the unchunked result; a crop that does not depend on its batch-mates; what cannot fit (a frame over the budget, a
tracker holding too much) failing one video in one line; and the peak RSS of a whole extraction in a child process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from affcli.pipeline.config import ExtractConfig
from affcli.pipeline.crop_settings import CropSettings
from affcli.pipeline.errors import MediaError
from affcli.pipeline.face_align import warp_affine
from affcli.pipeline.frames import iter_frame_folder
from affcli.pipeline.images import iter_image_folder
from affcli.pipeline.media import iter_video_frames
from affcli.pipeline.stages import FaceStage, FrameBatch, VideoEnd, VideoError
from affcli.synthetic.media import render_faces, smooth_background, write_test_video

SIZES = [(64, 48), (640, 360), (1280, 720), (1918, 1082)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[tuple[int, int], Path]:
    root = tmp_path_factory.mktemp("bounds")
    return {s: write_test_video(root / f"{s[0]}x{s[1]}.mp4", 7, 25.0, s, picture="noise" if s[0] < 700 else "blank")
            for s in SIZES}


@pytest.mark.parametrize("size", SIZES)
def test_video_batches_hold_at_most_the_budget_and_the_same_frames(size, videos):
    whole = np.concatenate([f for f, _ in iter_video_frames(videos[size], batch_size=64)])
    frame = whole[0].nbytes
    for frames_in_budget in (1, 3):
        budget = frames_in_budget * frame + frame // 2
        batches = list(iter_video_frames(videos[size], batch_size=64, max_bytes=budget))
        assert all(f.nbytes <= budget for f, _ in batches) and len(batches) == -(-7 // frames_in_budget)
        np.testing.assert_array_equal(np.concatenate([f for f, _ in batches]), whole)
        assert np.concatenate([t for _, t in batches]).tolist() == sorted(np.concatenate([t for _, t in batches]))
    with pytest.raises(MediaError, match=r"one decoded frame takes .* raise --decode-memory-mb") as e:
        next(iter_video_frames(videos[size], max_bytes=frame - 1))
    assert str(videos[size]) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("side,size", [(96, None), (24, 32), (300, None)])
def test_frame_folder_batches_hold_at_most_the_budget(side, size, tmp_path):
    for i in range(1, 8):
        cv2.imwrite(str(tmp_path / f"{i:05d}.png"), np.full((side, side + 5, 3), 10 * i, np.uint8))
    out_side = (size, size) if size else (side, side + 5)
    budget = 2 * out_side[0] * out_side[1] * 3
    whole = np.concatenate([f for f, _, _ in iter_frame_folder(tmp_path, size=size)])
    batches = list(iter_frame_folder(tmp_path, size=size, max_bytes=budget))
    assert [len(f) for f, _, _ in batches] == [2, 2, 2, 1] and all(f.nbytes <= budget for f, _, _ in batches)
    np.testing.assert_array_equal(np.concatenate([f for f, _, _ in batches]), whole)


def test_still_image_batches_are_bounded_by_their_header_sizes(tmp_path):
    sides = [40, 200, 40, 40, 300, 40]
    files = []
    for i, s in enumerate(sides):
        files.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(files[-1]), np.full((s, s, 3), i, np.uint8))
    budget = 300 * 300 * 3  # the 300 px image fills a batch of its own
    batches = list(iter_image_folder(files, batch_size=64, threads=2, max_bytes=budget))
    assert [len(imgs) for imgs, _, _ in batches] == [4, 1, 1]
    assert all(sum(i.nbytes for i in imgs) <= budget for imgs, _, _ in batches if len(imgs) > 1)
    assert [i.shape[0] for imgs, _, _ in batches for i in imgs] == sides
    assert np.concatenate([t for _, t, _ in batches]).tolist() == list(range(len(sides)))


# ---- the face stage: float work in chunks, same crops ------------------------------------------------------------

def _frames(n: int = 7, w: int = 200, h: int = 150) -> torch.Tensor:
    t = np.arange(n) / 25.0
    centres = np.stack([w / 2 + 25 * np.sin(t * 3), h / 2 + 12 * np.cos(t * 2)], 1)
    sides = 70 + 25 * np.sin(t * 5)  # faces of several sizes: several supersampling levels in one batch
    present = np.ones(n, bool)
    present[4:5] = False
    imgs = render_faces(smooth_background(np.random.default_rng(0), w, h), centres, sides,
                        np.ones((n, 3), np.float32), np.ones(n, np.float32), present)
    return torch.from_numpy(imgs).permute(0, 3, 1, 2)


def _run_stage(settings: CropSettings, frames: torch.Tensor, max_bytes: int | None, split: int = 4) -> list:
    stage = FaceStage(settings, settings.build_detector("cpu", 1), max_bytes=max_bytes)
    ts, ok = np.arange(len(frames)) / 25.0, np.ones(len(frames), bool)
    out = []
    for a in range(0, len(frames), split):
        out += stage(FrameBatch("v", frames[a:a + split], ts[a:a + split], ok[a:a + split]))
    out += stage(VideoEnd("v", 25.0))
    return [m for m in out if isinstance(m, FrameBatch)]


CROPS = {"haar boxes": ("video", "haar", {}), "mtcnn aligned": ("video", "mtcnn", {}),
         "mtcnn tracked k=3": ("video", "mtcnn", {"detect_every": 3}), "letterbox": ("video", "none", {}),
         "pre-cropped": ("frames", "none", {})}


@pytest.mark.parametrize("case", sorted(CROPS))
def test_face_stage_in_float_chunks_gives_the_unchunked_crops(case):
    kind, detector, extra = CROPS[case]
    settings = CropSettings(kind, 48, detector, **extra)
    frames = _frames()
    one_frame = 4 * frames[0].numel()
    a, b = _run_stage(settings, frames, None), _run_stage(settings, frames, one_frame + 1)
    x, y = torch.cat([m.crops for m in a]), torch.cat([m.crops for m in b])
    assert x.shape == (len(frames), 3, 48, 48)
    assert np.array_equal(np.concatenate([m.valid for m in a]), np.concatenate([m.valid for m in b]))
    assert np.concatenate([m.valid for m in a]).sum() >= len(frames) - 2 and x.float().std() > 10  # real crops
    assert torch.equal(x, y), case  # every detector sees a frame the same way in any chunk (MTCNN included)
    if a[0].faces is not None:
        for k in ("box", "score", "landmarks"):
            np.testing.assert_array_equal(np.concatenate([m.faces[k] for m in a]),
                                          np.concatenate([m.faces[k] for m in b]))


def test_a_face_crop_does_not_depend_on_its_batch_mates():
    frames = _frames(2).float()
    small = torch.tensor([[[0.2, 0.0, 10.0], [0.0, 0.2, 10.0]]])   # shrinks x5: 4x4 supersampling
    large = torch.tensor([[[0.9, 0.0, -20.0], [0.0, 0.9, 0.0]]])  # shrinks x1.1: 2x2
    alone = warp_affine(frames[1:], large, 40)
    together = warp_affine(frames, torch.cat([small, large]), 40)
    assert torch.equal(together[1:], alone)
    assert torch.equal(together[:1], warp_affine(frames[:1], small, 40))


def test_what_cannot_fit_fails_one_video_in_one_line():
    settings = CropSettings("video", 48, "haar", detect_every=8)
    frames = _frames(4)
    stage = FaceStage(settings, settings.build_detector("cpu", 1), max_bytes=3 * frames[0].numel())
    out = stage(FrameBatch("big", frames, np.arange(4.0), np.ones(4, bool)))
    assert len(out) == 1 and isinstance(out[0], VideoError) and "--detect-every 8 holds up to 7 frames" in \
        out[0].message and "\n" not in out[0].message
    assert stage(FrameBatch("big", frames, np.arange(4.0), np.ones(4, bool))) == []  # its later frames are dropped
    assert stage(VideoEnd("big", 25.0)) == []
    ok = stage(FrameBatch("other", frames[:, :, :60, :80].contiguous(), np.arange(4.0), np.ones(4, bool)))
    assert not any(isinstance(m, VideoError) for m in ok)


def test_the_budget_gives_every_batch_in_flight_its_share():
    cfg = ExtractConfig(cache="c", video_dir=Path("."), decode_memory_mb=1024, decode_workers=2)
    assert cfg.batch_bytes() * (cfg.frame_queue() + 2 * cfg.decode_workers + 2) <= 1024 * 2**20
    assert 3840 * 2160 * 3 * 4 <= cfg.batch_bytes() < 3840 * 2160 * 3 * 5  # 4K: four frames a batch
    assert 7680 * 4320 * 3 <= cfg.batch_bytes()  # 8K: one frame a batch still fits the default


# ---- a whole extraction: peak RSS stays near the budget whatever the frame count ----------------------------------

CHILD = """
import json, resource, sys
from pathlib import Path
from affcli.pipeline.config import ExtractConfig
from affcli.pipeline.extract import run_extract
root, budget, face = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def run(d):
    cfg = ExtractConfig(cache=str(root / (d + ".zarr")), backbones=["clip:tiny"], video_dir=root / d, device="cpu",
                        face=face, batch_size=16, decode_memory_mb=budget)
    assert all(r.status == "ok" for r in run_extract(cfg))
run("small")  # everything built and warm: what is left is what the big frames take
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run("big")
print(json.dumps({"over_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


def test_peak_memory_of_an_extraction_stays_near_the_budget(tmp_path):
    """32 frames of 1920x1080 under a 64 MiB budget: before, one 32-frame batch and its float copy took ~1 GiB more
    than the warm process; now about the budget plus one float frame."""
    for d, n, size in (("small", 4, (64, 48)), ("big", 32, (1920, 1080))):
        (tmp_path / d).mkdir()
        write_test_video(tmp_path / d / f"{d}.mp4", n, 25.0, size, picture="blank")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), "64", "none"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    over = json.loads(out.stdout.strip().splitlines()[-1])["over_mib"]
    assert over < 64 + 200, over
