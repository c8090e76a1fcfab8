"""Audio step -> video frame alignment: the policies on synthetic steps, then clicks through the tiny models."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from affcli.pipeline.align import align_steps
from affcli.pipeline.backbones import build_backbone
from affcli.synthetic.media import click_track

FPS = 30000 / 1001
CLICK_AT = 1.25


def _ramp(n: int = 10, dt: float = 0.1, window: float = 0.05):
    """Steps whose feature equals their centre time: centres dt/2 + k dt, windows ending `window` after."""
    centre = dt / 2 + np.arange(n) * dt
    return np.stack([centre, -centre], 1).astype(np.float32), centre, centre + window


def test_centered_interpolates_at_frame_times():
    feats, centre, end = _ramp()
    t = np.array([0.0, 0.05, 0.1, 0.33, 0.95, 1.0, 1.01, -0.1])
    out, valid = align_steps(feats, centre, end, t, "centered", duration=1.0)
    np.testing.assert_allclose(out[:6, 0], [0.05, 0.05, 0.1, 0.33, 0.95, 0.95], atol=1e-6)
    np.testing.assert_array_equal(valid, [True] * 6 + [False, False])
    assert (out[~valid] == 0).all()


def test_causal_uses_only_finished_steps():
    feats, centre, end = _ramp()
    t = np.array([0.0, 0.09, 0.1, 0.14, 0.15, 0.5, 0.99, 1.0, 1.2])
    out, valid = align_steps(feats, centre, end, t, "causal", duration=1.0)
    # step k (centre 0.05 + 0.1k) ends at 0.1 + 0.1k: a frame at t takes the last step with end <= t
    np.testing.assert_array_equal(valid, [False, False, True, True, True, True, True, True, False])
    np.testing.assert_allclose(out[valid, 0], [0.05, 0.05, 0.05, 0.45, 0.85, 0.95], atol=1e-6)
    for i in np.flatnonzero(valid):
        assert end[np.argmin(abs(centre - out[i, 0]))] <= t[i] + 1e-9


def test_causal_with_shared_window_ends_picks_latest_centre():
    feats = np.arange(6, dtype=np.float32)[:, None]
    centre = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 1.1])
    end = np.array([2.0, 2.0, 2.0, 1.0, 1.0, 1.5])  # steps computed in windows ending at 2.0, 1.0 and 1.5
    out, valid = align_steps(feats, centre, end, np.array([0.5, 1.0, 1.2, 1.6, 2.0]), "causal", duration=3.0)
    np.testing.assert_array_equal(valid, [False, True, True, True, True])
    np.testing.assert_array_equal(out[:, 0], [0, 4, 4, 5, 5])


def test_unsorted_steps_and_bad_policy():
    feats, centre, end = _ramp()
    perm = np.random.default_rng(0).permutation(len(centre))
    a, _ = align_steps(feats, centre, end, np.array([0.42]), "centered", 1.0)
    b, _ = align_steps(feats[perm], centre[perm], end[perm], np.array([0.42]), "centered", 1.0)
    np.testing.assert_allclose(a, b)
    with pytest.raises(ValueError):
        align_steps(feats, centre, end, np.array([0.1]), "future", 1.0)


@pytest.fixture(scope="module", params=["wav2vec2:tiny", "ast:tiny"])
def click_pair(request):
    n = 75
    ts = np.arange(n) / FPS
    seconds = n / FPS
    base = (np.random.default_rng(0).standard_normal(int(round(seconds * 16000))) * 0.1).astype(np.float32)
    click = base + click_track(seconds, CLICK_AT)[: len(base)]
    return build_backbone(request.param), ts, base, click


def test_centered_click_peaks_at_the_nearest_frame(click_pair):
    b, ts, base, click = click_pair
    f0, v0 = b.embed_audio(base, ts, "centered")
    f1, v1 = b.embed_audio(click, ts, "centered")
    assert v0.all() and v1.all()
    change = np.linalg.norm(f1 - f0, axis=1)
    nearest = int(np.argmin(abs(ts - CLICK_AT)))
    assert abs(int(change.argmax()) - nearest) <= 2, (b.spec, change.argmax(), nearest)
    assert change[nearest - 2 : nearest + 3].max() > 2 * np.median(change)


def test_causal_never_looks_ahead(click_pair):
    b, ts, base, click = click_pair
    f0, v0 = b.embed_audio(base, ts, "causal")
    f1, v1 = b.embed_audio(click, ts, "causal")
    np.testing.assert_array_equal(v0, v1)
    before = ts < CLICK_AT
    np.testing.assert_array_equal(f0[before], f1[before])  # bit-identical: no future sample reaches them
    assert np.abs(f1[~before] - f0[~before]).max() > 1e-3, "the click must show up after it happens"
    assert not v0[0] and v0[-1], "frames before the first finished window are invalid, later ones valid"
    late = ts > len(base) / 16000
    assert not late.any() or not v0[late].any()


def test_window_plans():
    from affcli.pipeline.backbones.windows import batched_windows, causal_ends, centered_starts

    np.testing.assert_array_equal(centered_starts(100, 30, 25), [0, 25, 50, 70])  # last chunk ends at 100
    np.testing.assert_array_equal(centered_starts(20, 30, 25), [0])
    np.testing.assert_array_equal(causal_ends(10, 4), [4, 8, 10])
    wav = np.arange(1, 11, dtype=np.float32)
    got = [(sl, x) for sl, x in batched_windows(wav, np.array([-2, 3, 8]), 4, batch=2)]
    assert [sl for sl, _ in got] == [slice(0, 2), slice(2, 3)]
    np.testing.assert_array_equal(np.concatenate([x for _, x in got]),
                                  [[0, 0, 1, 2], [4, 5, 6, 7], [9, 10, 0, 0]])  # zeros outside the audio
