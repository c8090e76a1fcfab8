"""Face-detector options survive the way they are stored: the crop fingerprint keeps them as JSON (a tuple becomes a
list), and `extract`, `stream` and `--face-option` (JSON values) hand those values back to the registry's checks.

Found by `bench/extract_resolution.py` (issue 20): the default `--face mtcnn` was refused on every input with
"thresholds=[0.6, 0.7, 0.7] must be a tuple" once options were checked against their annotations.
Classes: every registered detector's defaults as stored, each way in (config, CLI default, --face-option JSON, a
cache's fingerprint rebuilt by `stream`), and values that still must be refused in one line.
"""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from affcli.cache import FeatureStore
from affcli.cli import app
from affcli.pipeline.crop_settings import CropSettings
from affcli.pipeline.detectors import DETECTORS
from affcli.serve.features import face_stage
from affcli.synthetic.media import write_test_video

runner = CliRunner()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("v")
    write_test_video(d / "a.mp4", n_frames=4, fps=10.0, size=(160, 120), picture="face")
    return d


@pytest.mark.parametrize("name", DETECTORS.names())
def test_every_detector_builds_from_its_stored_defaults(name):
    stored = json.loads(json.dumps(DETECTORS.defaults(name)))  # as the crop fingerprint keeps them
    DETECTORS.check(name, stored)
    crop = CropSettings("video", 32, name, stored)
    assert crop.options == stored
    crop.build_detector(torch.device("cpu"))  # no "must be a tuple" for a value the store itself wrote
    CropSettings("video", 32, name).build_detector(torch.device("cpu"))


@pytest.mark.parametrize("args, recorded", [([], [0.6, 0.7, 0.7]),
                                            (["--face-option", "thresholds=[0.5, 0.6, 0.7]"], [0.5, 0.6, 0.7]),
                                            (["--face-option", "thresholds=[1, 1, 1]"], [1, 1, 1])])
def test_extract_with_mtcnn_options_as_json_runs_and_records_them(clip, tmp_path, args, recorded):
    cache = tmp_path / "c.zarr"
    r = runner.invoke(app, ["extract", "--cache", str(cache), "--video-dir", str(clip), "-b", "clip:tiny",
                            "--device", "cpu", "--face", "mtcnn", "--prompts", "expr8", *args])
    assert r.exit_code == 0, r.output
    crop = FeatureStore(cache, mode="r").fingerprint("clip:tiny")["preprocessing"]["crop"]
    assert crop["detector"] == "mtcnn" and crop["thresholds"] == recorded
    stage = face_stage(crop, "video", torch.device("cpu"))  # what `stream` rebuilds from the cache
    assert stage.detector.mtcnn.thresholds == tuple(float(t) for t in recorded)


@pytest.mark.parametrize("value, why", [('"abc"', "thresholds="), ('[0.5, "x", 0.7]', "thresholds="),
                                        ("[0.6, 0.7]", "must hold 3 values"), ("7", "thresholds=")])
def test_bad_thresholds_are_still_refused_in_one_line(clip, tmp_path, value, why):
    r = runner.invoke(app, ["extract", "--cache", str(tmp_path / "c.zarr"), "--video-dir", str(clip), "-b",
                            "clip:tiny", "--device", "cpu", "--face", "mtcnn", "--face-option", f"thresholds={value}"])
    assert r.exit_code == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "c.zarr").exists()
