"""Face detectors are a registry: adding one is one module and one registration (a toy detector registered here is
taken by the CLI, recorded in the fingerprint and rebuilt by `stream`); `CropSettings` reads and writes the crop
fingerprint exactly as affcli always stored it, so caches written before the registry are still accepted."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affcli.cache import FeatureStore
from affcli.cli import app
from affcli.common.registry import UnknownNameError
from affcli.heads.config import RunConfig
from affcli.heads.train.trainer import train_run
from affcli.pipeline.crop_settings import CropSettings
from affcli.pipeline.detectors import DETECTORS, Detections, FaceDetector
from affcli.serve.features import face_stage
from affcli.serve.stream import Streamer, frame_source
from affcli.synthetic.images import write_image_tree
from affcli.synthetic.media import make_demo_dataset, write_test_video
from tests.test_stream import _offline

runner = CliRunner()
OPENCV = "4.14.0"  # the OpenCV of the caches below (the Haar records carry the version that made them)

# The crop fingerprints (preprocessing["crop"]) and face-record attributes exactly as affcli wrote them before the
# detector registry (main at 686c759, clip:tiny, 160x120 video, 40x40 frame folders, still images).
MAIN_CROPS = {
    "mtcnn": {"mode": "face", "face_detector": "mtcnn:facenet-pytorch==2.6.0", "min_face_size": 20.0,
              "thresholds": [0.6, 0.7, 0.7], "factor": 0.709, "detect_width": 640, "detector": "mtcnn", "align": True,
              "template": "arcface-5pt", "size": 32, "margin": None, "detect_every": 1, "track_iou": None,
              "crop": "similarity warp to the template"},
    "mtcnn --no-align --detect-every 3": {
        "mode": "face", "face_detector": "mtcnn:facenet-pytorch==2.6.0", "min_face_size": 20.0,
        "thresholds": [0.6, 0.7, 0.7], "factor": 0.709, "detect_width": 640, "detector": "mtcnn", "align": False,
        "template": None, "size": 32, "margin": 0.25, "detect_every": 3, "track_iou": 0.4,
        "crop": "square box crop, zero padded"},
    "haar": {"mode": "face", "face_detector": "opencv-haar:haarcascade_frontalface_default.xml", "opencv": OPENCV,
             "margin": 0.25, "detect_width": 320, "min_face": 0.08, "scale_factor": 1.1, "min_neighbors": 5,
             "detect_every": 1, "detector": "haar", "align": False, "template": None, "size": 32, "track_iou": None,
             "crop": "square box crop, zero padded"},
    "haar --detect-every 2 --face-margin 0.3": {
        "mode": "face", "face_detector": "opencv-haar:haarcascade_frontalface_default.xml", "opencv": OPENCV,
        "margin": 0.3, "detect_width": 320, "min_face": 0.08, "scale_factor": 1.1, "min_neighbors": 5,
        "detect_every": 2, "detector": "haar", "align": False, "template": None, "size": 32, "track_iou": 0.4,
        "crop": "square box crop, zero padded"},
    "none": {"mode": "whole-frame", "size": 32},
    "frames": {"mode": "pre-cropped", "fps": 30.0, "size": 32},
    "images": {"mode": "whole-image", "size": 32, "augment": None},
    "images --views 2 --augment": {
        "mode": "whole-image", "size": 32,
        "augment": {"views": 2, "crop_scale": [0.5, 1.0], "flip": 0.5, "jitter": [0.4, 0.4, 0.4, 0.1], "seed": 0,
                    "library": "torchvision.transforms.v2"}},
}
MAIN_FACE_ATTRS = {
    "mtcnn": {"detector": "mtcnn", "align": True, "template": "arcface-5pt", "size": 32, "margin": None,
              "detect_every": 1, "track_iou": None},
    "haar --detect-every 2 --face-margin 0.3": {"detector": "haar", "align": False, "template": None, "size": 32,
                                                 "margin": 0.3, "detect_every": 2, "track_iou": 0.4},
}
# faces of still images as main cropped them (a host-side Haar cropper that no longer exists)
MAIN_IMAGE_FACES = {"mode": "face", "face_detector": "opencv-haar:haarcascade_frontalface_default.xml",
                    "opencv": OPENCV, "size": 32, "margin": 0.25, "detect_width": 320, "min_face": 0.08,
                    "scale_factor": 1.1, "min_neighbors": 5, "detect_every": 1,
                    "crop": "square, largest face, zero padded", "augment": None}


def _now(crop: dict) -> dict:
    """A stored record with this machine's OpenCV version (part of the Haar detector's identity)."""
    return {**crop, "opencv": cv2.__version__} if "opencv" in crop else crop


@pytest.mark.parametrize("name", list(MAIN_CROPS))
def test_main_crop_records_round_trip(name):
    crop = _now(MAIN_CROPS[name])
    settings = CropSettings.read(crop)
    assert settings.fingerprint() == crop
    if name in MAIN_FACE_ATTRS:
        assert settings.face_attrs() == MAIN_FACE_ATTRS[name]
    assert CropSettings.read(settings.fingerprint()) == settings


def test_main_image_face_crops_are_refused_in_one_line():
    with pytest.raises(ValueError, match="names no face detector"):
        CropSettings.read(MAIN_IMAGE_FACES)
    with pytest.raises(ValueError, match="not one affcli writes"):
        CropSettings.read({"mode": "elsewhere", "size": 32})


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    write_test_video(d / "a.mp4", n_frames=6, fps=10.0, size=(160, 120), audio=None, picture="face")
    return d


@pytest.mark.parametrize("name, args", [("mtcnn", []), ("haar", ["--face", "haar"]), ("none", ["--face", "none"]),
                                        ("mtcnn --no-align --detect-every 3", ["--no-align", "--detect-every", "3"])])
def test_extract_writes_the_main_record_so_old_caches_are_accepted(clip, tmp_path, name, args):
    cache = tmp_path / "c.zarr"
    cmd = ["extract", "--cache", str(cache), "--video-dir", str(clip), "-b", "clip:tiny", "--device", "cpu",
           "--prompts", "expr8", *args]
    assert runner.invoke(app, cmd).exit_code == 0
    assert FeatureStore(cache, mode="r").fingerprint("clip:tiny")["preprocessing"]["crop"] == _now(MAIN_CROPS[name])


def test_stream_rebuilds_main_records():
    cpu = torch.device("cpu")
    haar = face_stage(_now(MAIN_CROPS["haar"]), "video", cpu)
    assert haar.settings == CropSettings("video", 32, "haar") and type(haar.detector).__name__ == "HaarDetector"
    assert face_stage(MAIN_CROPS["none"], "video", cpu).settings.method == "letterbox"
    assert face_stage(MAIN_CROPS["frames"], "frames", cpu).settings.method == "pre-cropped"
    tracked = face_stage(_now(MAIN_CROPS["mtcnn --no-align --detect-every 3"]), "video", cpu)  # stream tracks too
    assert (tracked.settings.detector, tracked.settings.detect_every, tracked.settings.align) == ("mtcnn", 3, False)
    for crop, kind, why in ((MAIN_CROPS["frames"], "video", "pre-cropped face folders"),
                            (MAIN_CROPS["images"], "video", "still images"),
                            ({**MAIN_CROPS["mtcnn"], "detector": "gone"}, "video", "unknown face detector 'gone'")):
        with pytest.raises(ValueError, match=why):
            face_stage(crop, kind, cpu)


@pytest.mark.parametrize("args, why", [(["--face", "nope"], "unknown face detector 'nope'; valid face detector "
                                                             "names: haar, mtcnn, none"),
                                       (["--face", "haar", "--align"], "--align needs face landmarks"),
                                       (["--face", "none", "--align"], "--align needs face landmarks"),
                                       (["--face", "haar", "--face-option", "detect_width=8"], "haar: bad options"),
                                       (["--face-option", "thresholds=[0.6, 0.7]"], "must hold 3 values"),
                                       (["--face-option", "min_face_size=[1]"], "face detector 'mtcnn': ")])
def test_bad_face_options_are_one_line(clip, tmp_path, args, why):
    r = runner.invoke(app, ["extract", "--cache", str(tmp_path / "c.zarr"), "--video-dir", str(clip), "-b",
                            "clip:tiny", "--device", "cpu", *args])
    assert r.exit_code == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "c.zarr").exists()


# ---- a detector added in one module with one registration ----------------------------------------------------------
class CentreBox(FaceDetector):
    """A fixed box in the middle of every frame, `scale` of each side; no landmarks."""

    def __init__(self, device, threads, scale: float = 0.5):
        self.scale = float(scale)

    @classmethod
    def identity(cls) -> dict:
        return {"face_detector": "centre-box:1"}

    def __call__(self, frames: torch.Tensor) -> Detections:
        n, _, h, w = frames.shape
        s = self.scale
        box = torch.tensor([w * (1 - s) / 2, h * (1 - s) / 2, w * (1 + s) / 2, h * (1 + s) / 2]).expand(n, 4)
        return Detections(box.clone(), torch.ones(n), torch.full((n, 5, 2), float("nan")), torch.ones(n, dtype=torch.bool))


@pytest.fixture()
def toy():
    DETECTORS.register("toy", landmarks=False, help="test-only centred box")(CentreBox)
    yield "toy"
    DETECTORS.unregister("toy")


def test_cli_takes_the_toy_detector_and_the_fingerprint_records_it(toy, clip, tmp_path):
    cache = tmp_path / "c.zarr"
    base = ["extract", "--cache", str(cache), "--video-dir", str(clip), "-b", "clip:tiny", "--device", "cpu",
            "--prompts", "expr8"]
    r = runner.invoke(app, [*base, "--face", "toy", "--face-margin", "0"])
    assert r.exit_code == 0, r.output
    st = FeatureStore(cache, mode="r")
    crop = st.fingerprint("clip:tiny")["preprocessing"]["crop"]
    assert crop == {"mode": "face", "face_detector": "centre-box:1", "scale": 0.5, "detector": "toy", "align": False,
                    "template": None, "size": 32, "margin": 0.0, "detect_every": 1, "track_iou": None,
                    "crop": "square box crop, zero padded"}
    faces = st.read_faces("a")
    assert faces.attrs["detector"] == "toy" and faces.attrs["valid"].all() and np.isnan(faces.landmarks).all()
    np.testing.assert_allclose(faces.box, np.tile([40.0, 30.0, 120.0, 90.0], (6, 1)))
    again = runner.invoke(app, [*base, "--face", "toy", "--face-margin", "0"])
    assert again.exit_code == 0 and "1 skipped" in again.output
    other = runner.invoke(app, [*base, "--face", "haar", "--face-margin", "0"])
    assert other.exit_code == 2 and "different fingerprint" in other.stderr
    aligned = runner.invoke(app, [*base, "--face", "toy", "--align"])
    assert aligned.exit_code == 2 and "--align needs face landmarks, which --face toy does not give" in aligned.stderr
    smaller = [*base, "--face", "toy", "--face-margin", "0", "--face-option", "scale=0.25"]
    assert runner.invoke(app, smaller).exit_code == 2, "other detector options are another fingerprint"
    smaller[2] = str(tmp_path / "small.zarr")
    assert runner.invoke(app, smaller).exit_code == 0
    small = FeatureStore(smaller[2], mode="r")
    assert small.fingerprint("clip:tiny")["preprocessing"]["crop"]["scale"] == 0.25
    np.testing.assert_allclose(small.read_faces("a").box, np.tile([60.0, 45.0, 100.0, 75.0], (6, 1)))
    for opt, why in (("nope=1", "face detector 'toy' takes no option 'nope'; valid options: scale"),
                     ("scale", "--face-option 'scale': expected key=value")):
        bad = runner.invoke(app, [*base[:2], str(tmp_path / "bad.zarr"), *base[3:], "--face", "toy", "--face-option", opt])
        assert bad.exit_code == 2 and why in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.output
    assert not (tmp_path / "bad.zarr").exists()


def test_stream_rebuilds_the_toy_crops_equal_to_offline_predict(toy, tmp_path):
    ds = make_demo_dataset(tmp_path / "data", n_videos=3, seconds=2.0, seed=0)
    cache = tmp_path / "cache.zarr"
    r = runner.invoke(app, ["extract", "--cache", str(cache), "--video-dir", str(ds.video_dir), "-b", "clip:tiny",
                            "--device", "cpu", "--face", "toy", "--batch-size", "64", "--prompts", "expr8"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "gru"
    train_run(RunConfig.from_dict({"task": "expr", "features": ["clip:tiny"], "cache": str(cache),
                                   "labels": str(ds.label_root), "window": 8, "stride": 2, "d_model": 16,
                                   "temporal": "gru(hidden=16)", "horizon": 2, "causal": True,
                                   "label_position": "last", "epochs": 1, "batch_size": 32, "device": "cpu",
                                   "plots": False, "out": str(run)}))
    off = _offline(run, tmp_path / "off", "demo00")
    s = Streamer.from_run(run)
    assert s.featurizer.stages[0].settings.detector == "toy"
    rows = list(s.run(frame_source(video=ds.video_dir / "demo00.mp4")))
    on = np.stack([row.preds["expr"] for row in rows])
    assert len(rows) == len(off) and all(row.valid for row in rows), "the toy box is a face in every frame"
    np.testing.assert_allclose(on[: len(off) - 2], off[2:], rtol=0, atol=1e-4)


def test_image_faces_use_the_face_detector(toy, tmp_path):
    root = tmp_path / "lsd"
    write_image_tree(root, per_class=2, size=24, classes=("ANGER",))
    base = ["extract", "--images-dir", str(root), "--image-faces", "-b", "clip:tiny", "--device", "cpu",
            "--prompts", "expr8"]
    toy_cache, haar_cache = tmp_path / "t.zarr", tmp_path / "h.zarr"
    assert runner.invoke(app, [*base, "--cache", str(toy_cache), "--face", "toy"]).exit_code == 0
    st = FeatureStore(toy_cache, mode="r")
    crop = st.fingerprint("clip:tiny")["preprocessing"]["crop"]
    assert (crop["detector"], crop["scale"], crop["augment"]) == ("toy", 0.5, None)
    assert st.fingerprint("clip:tiny")["preprocessing"]["input"] == "images"
    assert CropSettings.read(crop).input == "images"
    assert st.read_video("clip:tiny", "train__ANGER").valid.all()
    r = runner.invoke(app, [*base, "--cache", str(haar_cache), "--face", "haar"])
    assert r.exit_code == 0, r.output
    said = [ln for ln in r.output.splitlines() if ln.startswith("warning:") and "no usable image" in ln]
    assert len(said) == 1 and "ANGER" in said[0], r.output  # one line, naming the folder
    st = FeatureStore(haar_cache, mode="r")
    assert st.fingerprint("clip:tiny")["preprocessing"]["crop"]["detector"] == "haar"
    rec = st.read_video("clip:tiny", "train__ANGER")
    assert not rec.valid.any() and not rec.feats.any(), "striped squares hold no face: zero rows, valid False"


def test_the_toy_detector_is_gone_after_the_tests():
    assert "toy" not in DETECTORS
    with pytest.raises(UnknownNameError, match="valid face detector names: haar, mtcnn, none"):
        CropSettings("video", 32, "toy")
