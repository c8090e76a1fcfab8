"""Two writers on one cache: leases, first writer wins, no failure reported for another run's video, manifest once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from affcli.cache import FeatureStore
from affcli.cache import coord
from affcli.cache.errors import DoneElsewhere
from affcli.cache.fingerprint import make_fingerprint
from affcli.cache.verify import verify
from affcli.synthetic.media import write_test_video

ROOT = Path(__file__).resolve().parents[1]
SPEC = "clip:tiny"


def _fp(dim: int = 4) -> dict:
    return make_fingerprint("toy:a", "visual", dim, "0" * 64, {"input": "video"}, None, {})


def _video(n: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), np.ones(n, bool), np.arange(n) / 10.0


def test_second_writer_of_a_complete_video_gets_done_elsewhere_and_no_failure(tmp_path):
    a, b = FeatureStore(tmp_path / "c.zarr"), FeatureStore(tmp_path / "c.zarr")
    a.ensure_feature_set("toy:a", _fp())
    b.ensure_feature_set("toy:a", _fp())
    a.write_video("toy:a", "v1", *_video(), fps=10.0)
    with pytest.raises(DoneElsewhere, match="already complete"):
        b.write_video("toy:a", "v1", *_video(seed=1), fps=10.0)
    b.record_failure("toy:a", "v1", "late writer's error")
    assert b.failures("toy:a") == {}
    np.testing.assert_array_equal(b.read_video("toy:a", "v1").feats, _video()[0].astype(np.float16))


def test_a_failure_is_forgotten_once_the_video_completes(tmp_path):
    st = FeatureStore(tmp_path / "c.zarr")
    st.ensure_feature_set("toy:a", _fp())
    st.record_failure("toy:a", "v1", "decode error")
    assert st.failures("toy:a") == {"v1": "decode error"}
    st.write_video("toy:a", "v1", *_video(), fps=10.0)
    assert st.failures("toy:a") == {}
    assert st.manifest().filter(pl.col("video") == "v1")["status"].to_list() == ["ok"]


def test_lease_excludes_a_second_holder_until_released(tmp_path):
    fs, root = coord.store_fs(str(tmp_path))
    held = coord.acquire(fs, root, "x/v1")
    with pytest.raises(coord.LeaseBusy, match="held by another writer"):
        coord.acquire(fs, root, "x/v1", wait=0.3)
    held.release()
    coord.acquire(fs, root, "x/v1", wait=0.3).release()


def test_lease_of_a_dead_process_or_past_its_expiry_is_broken(tmp_path):
    fs, root = coord.store_fs(str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / coord.LEASE_DIR / "x" / "v1"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"owner": f"{coord.socket.gethostname()}:{dead.stdout.strip()}:t", "expires": 1e12}))
    coord.acquire(fs, root, "x/v1", wait=0.3).release()
    path.write_text(json.dumps({"owner": "elsewhere:1:t", "expires": time.time() - 1}))
    coord.acquire(fs, root, "x/v1", wait=0.3).release()


def test_lease_admits_one_holder_at_a_time_under_contention(tmp_path):
    fs, root = coord.store_fs(str(tmp_path))
    inside, overlaps = [0], []

    def worker() -> None:
        for _ in range(5):
            with coord.lease(fs, root, "x/hot", wait=30):
                inside[0] += 1
                overlaps.append(inside[0])
                time.sleep(0.005)
                inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlaps) == 20 and max(overlaps) == 1


def test_concurrent_feature_set_registration_loses_none(tmp_path):
    cache = tmp_path / "c.zarr"
    stores = [FeatureStore(cache) for _ in range(3)]
    threads = [threading.Thread(target=st.ensure_feature_set,
                                args=(f"toy:{i}", make_fingerprint(f"toy:{i}", "visual", 4, "0" * 64, {}, None, {})))
               for i, st in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert FeatureStore(cache, mode="r").feature_sets() == ["toy:0", "toy:1", "toy:2"]


def _cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT.parent))
    return subprocess.Popen([sys.executable, "-m", "affcli"] + args, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _arrays(cache: Path) -> dict:
    st = FeatureStore(cache, mode="r")
    return {(s, v): (r.feats, r.valid, r.timestamps) for s in st.feature_sets() for v in st.videos(s)
            for r in [st.read_video(s, v)]}


def test_two_extract_processes_at_once_equal_a_clean_run(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    for i in range(3):
        write_test_video(d / f"v{i}.mp4", n_frames=12, fps=12.0, size=(96, 72), picture="face")
    base = ["extract", "--video-dir", str(d), "--device", "cpu", "--backbone", SPEC, "--batch-size", "8"]
    clean = tmp_path / "clean.zarr"
    p = _cli(base + ["--cache", str(clean)])
    assert p.wait(timeout=300) == 0, p.stdout.read()
    shared = tmp_path / "shared.zarr"
    procs = [_cli(base + ["--cache", str(shared)]) for _ in range(2)]
    outs = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
    for rc, out in outs:
        assert rc == 0, out
        assert "0 failed" in out and "failed" not in out.replace("0 failed", ""), out
    a, b = _arrays(clean), _arrays(shared)
    assert a.keys() == b.keys() and len(a) == 3
    for k in a:
        for x, y in zip(a[k], b[k]):
            np.testing.assert_array_equal(x, y)
    assert verify(shared) == []
    st = FeatureStore(shared, mode="r")
    assert st.failures(SPEC) == {}
    m = pl.read_parquet(shared / "manifest.parquet")
    assert sorted(m["video"].to_list()) == ["v0", "v1", "v2"] and set(m["status"]) == {"ok"}
    assert [p for p in (shared / coord.LEASE_DIR).rglob("*") if p.is_file()] == [], "leases left behind"
