"""`extract --dask-local`: the same arrays as one process, and a worker SIGKILLed mid-run changes nothing."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from affcli.cache import FeatureStore
from affcli.cache.verify import verify
from affcli.common.cluster import local_cluster, partition, worker_envs
from affcli.pipeline.distributed import run_on_client
from affcli.pipeline.extract import ExtractConfig, run_extract
from affcli.synthetic.media import write_test_video

SPECS = ["clip:tiny"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dv")
    for i in range(4):
        write_test_video(d / f"v{i}.mp4", n_frames=16 + 4 * i, fps=12.0, size=(96, 72), picture="face")
    return d


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("ref") / "c.zarr"
    res = run_extract(_cfg(videos, cache))
    assert [r.status for r in res] == ["ok"] * 4
    return _arrays(cache)


@pytest.fixture(scope="module")
def client():
    with local_cluster(2, gpus=0) as c:
        yield c


def _cfg(videos: Path, cache: Path) -> ExtractConfig:
    return ExtractConfig(cache=cache, backbones=SPECS, video_dir=videos, device="cpu", batch_size=8,
                         decode_workers=1, prompt_sets=())


def _arrays(cache: Path) -> dict:
    st = FeatureStore(cache, mode="r")
    return {(s, v): (r.feats, r.valid, r.timestamps) for s in st.feature_sets() for v in st.videos(s)
            for r in [st.read_video(s, v)]}


def _n_done(cache: Path) -> int:
    try:
        return len(FeatureStore(cache, mode="r").videos(SPECS[0]))
    except Exception:  # not created yet
        return 0


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and len(a) == 4
    for k in a:
        for x, y in zip(a[k], b[k]):
            np.testing.assert_array_equal(x, y, err_msg=str(k))


def test_partition_covers_every_id_once_and_envs_pin_one_gpu_each():
    ids = [f"v{i}" for i in range(11)]
    parts = partition(ids, 2)
    assert sorted(sum(parts, [])) == sorted(ids) and len(parts) == 8
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_envs(3, gpus=2)] == ["0", "1"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_envs(3, gpus=0)] == ["", "", ""]


def test_dask_local_equals_single_process_array_by_array(client, videos, reference, tmp_path):
    events = []
    res = run_on_client(client, _cfg(videos, tmp_path / "d.zarr"), lambda e, i: events.append((e, i)))
    assert [r.status for r in res] == ["ok"] * 4
    assert [e for e, _ in events] == ["start"] + ["video"] * 4 and events[0][1]["videos"] == 4
    _same(reference, _arrays(tmp_path / "d.zarr"))
    assert verify(tmp_path / "d.zarr") == []
    m = FeatureStore(tmp_path / "d.zarr", mode="r").manifest()
    assert m.height == 4 and set(m["status"]) == {"ok"}


def test_worker_killed_mid_run_then_run_completes_equal_to_clean(client, videos, reference, tmp_path):
    cache = tmp_path / "k.zarr"
    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            busy = [w for w, keys in client.processing().items() if keys]
            if busy and _n_done(cache) >= 1:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    t = threading.Thread(target=kill_a_busy_worker, daemon=True)
    t.start()
    res = run_on_client(client, _cfg(videos, cache))
    t.join()
    assert killed, "no worker was killed while busy"
    assert sorted(r.video_id for r in res) == ["v0", "v1", "v2", "v3"]
    assert {r.status for r in res} <= {"ok", "skipped"}
    _same(reference, _arrays(cache))
    assert verify(cache) == []
    assert FeatureStore(cache, mode="r").failures(SPECS[0]) == {}


def test_an_id_refused_at_discovery_is_one_failed_result_on_a_cluster(client, videos, tmp_path):
    import shutil

    d = tmp_path / "v"
    d.mkdir()
    shutil.copy(videos / "v0.mp4", d / "v0.mp4")
    shutil.copy(videos / "v0.mp4", d / "bad\nid.mp4")
    events = []
    res = run_on_client(client, _cfg(d, tmp_path / "r.zarr"), lambda e, i: events.append((e, i)))
    assert [(r.video_id, r.status) for r in res] == [("bad\\nid", "failed"), ("v0", "ok")]
    assert [i["video"] for e, i in events if e == "refused"] == ["bad\\nid"] and "rename it" in res[0].message
    assert FeatureStore(tmp_path / "r.zarr", mode="r").videos(SPECS[0]) == ["v0"]
