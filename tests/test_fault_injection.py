"""Seeded fault injection: an OSError at a random point of the cache writes fails that video alone, in one line,
leaves nothing that looks complete, and a re-run repairs the cache to equal a clean run's; a flipped byte in a random
chunk is a one-line BadVideo on load (skipped with --skip-bad)."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from affcli.cache import FeatureStore, load_table
from affcli.cache.errors import BadVideo
from affcli.cache.store import TEXT_GROUP, safe_key
from affcli.cache.verify import verify
from affcli.cli import app
from affcli.pipeline.extract import ExtractConfig, run_extract
from affcli.synthetic.media import write_test_video

SPECS = ["clip:tiny", "wav2vec2:tiny"]
VIDEOS = ["v0", "v1", "v2"]
SEEDS = [0, 1, 2, 3]
SR = 16000


class InjectedFault(OSError):
    """The disk error the tests inject into a cache write."""


def _extract(cache: Path, videos: Path) -> tuple[list, list[dict]]:
    """Run extract in-process; (results, the per-video progress events)."""
    events: list[dict] = []
    cfg = ExtractConfig(cache=cache, backbones=list(SPECS), video_dir=videos, device="cpu", batch_size=16,
                        face="haar", decode_workers=1, face_threads=1)
    res = run_extract(cfg, lambda ev, info: events.append(dict(info)) if ev == "video" else None)
    return res, events


class WriteFaults:
    """Counts the writes into video groups (array creations and attribute updates) and fails the k-th one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None):
        self.calls, self.fail_at, self.failed_path = 0, fail_at, None
        for name in ("create_array", "update_attributes"):
            monkeypatch.setattr(zarr.Group, name, self._wrap(getattr(zarr.Group, name)))

    def _wrap(self, orig):
        def op(group, *args, **kwargs):
            path = group.path
            if path.count("/") >= 1 and not path.startswith(TEXT_GROUP):  # <set>/<video>[/faces]
                self.calls += 1
                if self.calls == self.fail_at:
                    self.failed_path = path
                    raise InjectedFault(28, "injected: no space left on device")
            return orig(group, *args, **kwargs)
        return op


def _arrays(cache: Path) -> dict:
    st = FeatureStore(cache, mode="r")
    out = {}
    for s in st.feature_sets():
        for v in st.videos(s):
            r = st.read_video(s, v, faces=True)
            faces = () if r.faces is None else (r.faces.box, r.faces.score, r.faces.landmarks)
            out[(s, v)] = (r.feats, r.valid, r.timestamps, *faces)
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fi_videos")
    t = np.arange(SR) / SR
    for i, v in enumerate(VIDEOS):
        tone = (0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32)
        write_test_video(d / f"{v}.mp4", n_frames=10 + 2 * i, fps=12.0, size=(96, 72), audio=tone, picture="face")
    return d


@pytest.fixture(scope="module")
def clean(videos, tmp_path_factory) -> tuple[Path, dict, int]:
    """A clean run's cache, its arrays, and how many video-group writes it made (the range faults are drawn from)."""
    cache = tmp_path_factory.mktemp("fi_clean") / "c.zarr"
    mp = pytest.MonkeyPatch()
    try:
        counter = WriteFaults(mp)
        res, _ = _extract(cache, videos)
    finally:
        mp.undo()
    assert [r.status for r in res] == ["ok"] * len(VIDEOS), [r.message for r in res]
    arrays = _arrays(cache)
    assert len(arrays) == len(SPECS) * len(VIDEOS) and len(arrays[("clip:tiny", "v0")]) == 6, "face record expected"
    return cache, arrays, counter.calls


@pytest.mark.parametrize("seed", SEEDS)
def test_write_fault_fails_one_video_in_one_line_and_a_rerun_repairs_it(seed, videos, clean, tmp_path, monkeypatch):
    _, clean_arrays, n_writes = clean
    k = random.Random(seed).randint(1, n_writes)
    cache = tmp_path / "c.zarr"
    faults = WriteFaults(monkeypatch, fail_at=k)
    res, events = _extract(cache, videos)
    monkeypatch.undo()
    assert faults.failed_path is not None, f"seed {seed}: write {k} of {n_writes} was never reached"
    set_key, vid_key = faults.failed_path.split("/")[:2]
    spec = next(s for s in SPECS if safe_key(s) == set_key)
    vid = next(v for v in VIDEOS if safe_key(v) == vid_key)

    failed = [r for r in res if r.status == "failed"]
    assert [r.video_id for r in failed] == [vid], [(r.video_id, r.status, r.message) for r in res]
    msg = failed[0].message
    assert "\n" not in msg and f"{vid}.mp4" in msg and "injected: no space left on device" in msg
    reported = [e for e in events if e["video"] == vid]
    assert len(reported) == 1 and reported[0]["status"] == "failed" and "\n" not in reported[0]["message"]
    assert {r.video_id for r in res if r.status == "ok"} == set(VIDEOS) - {vid}

    st = FeatureStore(cache, mode="r")
    assert not st.has_video(spec, vid) and vid not in st.videos(spec), "the interrupted video looks complete"
    assert vid in st.failures(spec) and "\n" not in st.failures(spec)[vid]
    with pytest.raises(Exception, match="not \\(completely\\) in feature set"):
        st.read_video(spec, vid)
    for s in SPECS:  # everything that is marked complete is exactly what a clean run wrote
        for v in st.videos(s):
            for a, b in zip(st.read_video(s, v, faces=True).feats, clean_arrays[(s, v)][0]):
                np.testing.assert_array_equal(a, b)

    res2, _ = _extract(cache, videos)
    assert {r.video_id: r.status for r in res2}[vid] == "ok" and all(r.status in ("ok", "skipped") for r in res2)
    repaired = _arrays(cache)
    assert repaired.keys() == clean_arrays.keys()
    for key, arrays in clean_arrays.items():
        assert len(repaired[key]) == len(arrays), key
        for a, b in zip(arrays, repaired[key]):
            np.testing.assert_array_equal(a, b, err_msg=f"seed {seed}: {key}")
    st = FeatureStore(cache, mode="r")
    assert all(st.failures(s) == {} and st.incomplete(s) == [] for s in SPECS)
    assert verify(cache) == []
    out = CliRunner().invoke(app, ["cache", "verify", str(cache)])
    assert out.exit_code == 0, out.output


@pytest.mark.parametrize("seed", SEEDS)
def test_flipped_byte_in_a_random_chunk_is_one_line_bad_video_and_skip_bad_continues(seed, clean, tmp_path, capsys):
    clean_cache, clean_arrays, _ = clean
    cache = tmp_path / "c.zarr"
    shutil.copytree(clean_cache, cache)
    rng = random.Random(seed)
    spec, vid = rng.choice(SPECS), rng.choice(VIDEOS)
    chunks = sorted(p for p in (cache / safe_key(spec) / safe_key(vid)).rglob("*")
                    if p.is_file() and p.name != "zarr.json")
    chunk = rng.choice(chunks)
    raw = bytearray(chunk.read_bytes())
    at = rng.randrange(len(raw))
    raw[at] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    where = f"seed {seed}: byte {at} of {chunk.relative_to(cache)}"

    with pytest.raises(BadVideo) as e:
        load_table(cache, SPECS)
    assert (e.value.spec, e.value.video) == (spec, vid), where
    assert "\n" not in str(e.value) and f"feature set {spec!r}, video {vid!r}" in str(e.value), where
    capsys.readouterr()
    tab = load_table(cache, SPECS, skip_bad=True)
    assert tab.videos == [v for v in VIDEOS if v != vid], where
    for v in tab.videos:
        for s in SPECS:
            np.testing.assert_array_equal(tab.feats[s][tab.video_slice(v)].numpy(), clean_arrays[(s, v)][0])
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(warned) == 1 and vid in warned[0] and spec in warned[0], warned
    assert verify(cache) != [], where
