"""Batched checked reads (cache/bulk.py): `load_table` equals the Zarr read array by array on local disk and on a
loopback S3 server; a flipped byte in any chunk read through the batched path is a one-line BadVideo; caches written
before the per-array CRC-32C (sha256 only) still load and are still checked; odd layouts take the Zarr path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from affcli.cache import FeatureStore, load_table
from affcli.cache import bulk
from affcli.cache.errors import BadVideo
from affcli.cache.store import FaceRecord, safe_key
from affcli.cache.verify import verify
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

BAD = "video002"


@pytest.fixture
def synth(tmp_path) -> Path:
    cache, _ = make_synthetic(tmp_path / "s", n_videos=5, n_frames=700, dims=(24, 16))
    return cache


def _zarr_read(cache, specs: list[str]) -> dict:
    st = FeatureStore(str(cache), mode="r")
    return {(s, v): st.read_video(s, v) for s in specs for v in st.videos(s)}


def _assert_equal_to_zarr(tab, ref: dict, specs: list[str]) -> None:
    for v in tab.videos:
        sl = tab.video_slice(v)
        for s in specs:
            np.testing.assert_array_equal(tab.feats[s][sl].numpy(), ref[(s, v)].feats)
            np.testing.assert_array_equal(tab.valid[s][sl].numpy(), ref[(s, v)].valid)
        np.testing.assert_array_equal(tab.timestamps[sl].numpy(), ref[(specs[0], v)].timestamps)


def _flip(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


def _multi_chunk_cache(tmp_path: Path) -> tuple[Path, str]:
    """Videos whose feats shard holds several ~1 MB inner chunks (and a padded last chunk), with a face record."""
    from affcli.cache.fingerprint import make_fingerprint

    cache, spec = tmp_path / "m.zarr", "clip:multi"
    st = FeatureStore(cache)
    st.ensure_feature_set(spec, make_fingerprint(spec, "visual", 512, "test"))
    rng = np.random.default_rng(1)
    for i, n in enumerate((2500, 1024, 7)):
        valid = rng.random(n) > 0.2
        feats = rng.standard_normal((n, 512)).astype(np.float16) * valid[:, None]
        box = rng.random((n, 4)).astype(np.float32)
        faces = FaceRecord(box, rng.random(n).astype(np.float32), rng.random((n, 5, 2)).astype(np.float32),
                           {"detector": "haar"})
        st.write_video(spec, f"m{i}", feats, valid, np.arange(n) / 25.0, 25.0, faces=faces)
    return cache, spec


def test_equals_zarr_read_with_several_chunks_and_faces(tmp_path):
    cache, spec = _multi_chunk_cache(tmp_path)
    assert len(json.loads((cache / "clip_multi" / "m0" / "feats" / "zarr.json").read_text())["codecs"][0]
               ["configuration"]["chunk_shape"]) == 2
    for threads in (1, 3):
        tab = load_table(cache, [spec], threads=threads)
        assert tab.videos == ["m0", "m1", "m2"] and tab.n_frames == 2500 + 1024 + 7
        _assert_equal_to_zarr(tab, _zarr_read(cache, [spec]), [spec])


@pytest.mark.parametrize("target", ["feats/c/0/0", "valid/c/0", "timestamps/c/0", "faces/box/c/0/0",
                                    "faces/landmarks/c/0/0/0", "feats-index"])
def test_flipped_byte_anywhere_is_one_line_bad_video(tmp_path, target):
    cache, spec = _multi_chunk_cache(tmp_path)
    vdir = cache / safe_key(spec) / "m0"
    shard = vdir / "feats" / "c" / "0" / "0"
    if target == "feats-index":
        _flip(shard, shard.stat().st_size - 10)
    else:
        p = vdir / target
        _flip(p, p.stat().st_size // 2 if target.startswith("feats") else min(p.stat().st_size - 1, 20))
    with pytest.raises(BadVideo) as e:
        load_table(cache, [spec])
    assert (e.value.spec, e.value.video) == (spec, "m0") and "\n" not in str(e.value)
    tab = load_table(cache, [spec], skip_bad=True)
    assert tab.videos == ["m1", "m2"]


@pytest.mark.parametrize("manifest", [False, True])
def test_a_deleted_face_record_is_one_line_bad_video(tmp_path, manifest):
    import shutil

    cache, spec = _multi_chunk_cache(tmp_path)
    if manifest:
        FeatureStore(cache).write_manifest()
    shutil.rmtree(cache / safe_key(spec) / "m1" / "faces")
    with pytest.raises(BadVideo) as e:
        load_table(cache, [spec])
    assert (e.value.spec, e.value.video) == (spec, "m1") and "\n" not in str(e.value)
    assert load_table(cache, [spec], skip_bad=True).videos == ["m0", "m2"]


def test_a_flip_in_the_second_chunk_is_caught(tmp_path):
    cache, spec = _multi_chunk_cache(tmp_path)
    _flip(cache / safe_key(spec) / "m0" / "feats" / "c" / "0" / "0", 1024 * 512 * 2 + 77)
    with pytest.raises(BadVideo, match="video 'm0': checksum mismatch \\(feats changed after writing\\)"):
        load_table(cache, [spec])


def test_cache_written_before_crc32c_loads_and_is_checked_by_sha256(synth):
    for p in [q for s in (VISUAL, AUDIO) for q in (synth / safe_key(s)).glob("*/zarr.json")]:
        d = json.loads(p.read_text())
        assert "crc32c" in d["attributes"] and "sha256" in d["attributes"]
        del d["attributes"]["crc32c"]
        p.write_text(json.dumps(d))
    ref = _zarr_read(synth, [VISUAL, AUDIO])
    _assert_equal_to_zarr(load_table(synth, [VISUAL, AUDIO]), ref, [VISUAL, AUDIO])
    chunk = synth / safe_key(AUDIO) / BAD / "feats" / "c" / "0" / "0"
    _flip(chunk, 100)
    with pytest.raises(BadVideo, match=f"feature set '{AUDIO}', video '{BAD}': checksum mismatch"):
        load_table(synth, [VISUAL, AUDIO])


def test_an_edited_stored_checksum_is_refused(synth):
    p = synth / safe_key(VISUAL) / BAD / "zarr.json"
    d = json.loads(p.read_text())
    d["attributes"]["crc32c"]["valid"] ^= 1
    p.write_text(json.dumps(d))
    FeatureStore(str(synth)).write_manifest()  # the manifest copies the edited CRC: nothing vouches for the data
    with pytest.raises(BadVideo, match=f"video '{BAD}': checksum mismatch \\(valid changed"):
        load_table(synth, [VISUAL])


def test_edited_array_metadata_still_loads_the_data_and_verify_names_it(synth, monkeypatch):
    """load_table derives each array's layout from n_frames, the fingerprint and the writer and checks the bytes;
    an edited or deleted array zarr.json does not change what it returns; `cache verify` reports it."""
    ref = _zarr_read(synth, [VISUAL])
    meta = synth / safe_key(VISUAL) / BAD / "valid" / "zarr.json"
    d = json.loads(meta.read_text())
    d["codecs"][-1] = {"name": "gzip", "configuration": {"level": 1}}
    meta.write_text(json.dumps(d))
    (synth / safe_key(VISUAL) / "video003" / "feats" / "zarr.json").unlink()
    monkeypatch.setattr(bulk, "read_checked", lambda *a, **k: pytest.fail("array metadata was consulted"))
    _assert_equal_to_zarr(load_table(synth, [VISUAL]), ref, [VISUAL])
    problems = " | ".join(verify(synth))
    assert f"{VISUAL}/{BAD}" in problems and f"{VISUAL}/video003" in problems


def test_the_batched_path_does_not_fall_back_on_a_clean_cache(synth, monkeypatch):
    monkeypatch.setattr(bulk, "read_checked", lambda *a, **k: pytest.fail("Zarr fallback on a clean cache"))
    tab = load_table(synth, [VISUAL, AUDIO])
    assert len(tab.videos) == 5


def test_loader_does_not_import_dask():
    import subprocess
    import sys

    code = "import sys; from affcli.cache import load_table; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- the same on a loopback S3 server ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3(s3_server):
    """The session's loopback S3 server (tests/conftest.py) with this module's bucket."""
    if not s3_server.exists("bulk"):
        s3_server.mkdir("bulk")
    return s3_server


def test_s3_equals_zarr_and_a_flipped_byte_is_bad_video(s3, tmp_path, monkeypatch):
    cache, spec = _multi_chunk_cache(tmp_path)
    s3.put(str(cache), "bulk/m.zarr", recursive=True)
    url = "s3://bulk/m.zarr"
    monkeypatch.setattr(bulk, "BATCH_BYTES", 1 << 20)  # several batches, fetched ahead
    tab = load_table(url, [spec])
    _assert_equal_to_zarr(tab, _zarr_read(cache, [spec]), [spec])
    shard = "bulk/m.zarr/clip_multi/m1/feats/c/0/0"
    raw = bytearray(s3.cat(shard))
    raw[5000] ^= 0xFF
    s3.pipe(shard, bytes(raw))
    with pytest.raises(BadVideo) as e:
        load_table(url, [spec])
    assert (e.value.spec, e.value.video) == (spec, "m1") and "checksum mismatch" in str(e.value)
    assert load_table(url, [spec], skip_bad=True).videos == ["m0", "m2"]
    s3.rm("bulk/m.zarr/clip_multi/m2/valid/zarr.json")  # data intact: loaded; `cache verify` names it
    _assert_equal_to_zarr(load_table(url, [spec], videos=["m0", "m2"]), _zarr_read(cache, [spec]), [spec])
    assert any("m2" in p for p in verify(url))


# ---- sized from the manifest: 4 objects per video (its group's complete mark and 3 data objects), fetched in one
# ---- batch; a stale or damaged manifest never gives a wrong answer, a video marked incomplete is never returned ----

def _rewrite(cache: Path, spec: str, vid: str, n: int, seed: int, complete: bool = True) -> np.ndarray:
    """Replace a complete video with other data after the manifest was built (as a lost manifest rebuild would)."""
    import shutil

    shutil.rmtree(cache / safe_key(spec) / safe_key(vid))
    st = FeatureStore(str(cache))
    feats = np.random.default_rng(seed).standard_normal((n, st.fingerprint(spec)["dim"])).astype(np.float16)
    st.write_video(spec, vid, feats, np.arange(n) % 3 > 0, np.arange(n) / 7.0, 7.0)
    if not complete:
        p = cache / safe_key(spec) / safe_key(vid) / "zarr.json"
        d = json.loads(p.read_text())
        d["attributes"]["complete"] = False
        p.write_text(json.dumps(d))
    return feats


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    """Where a prepared local cache is loaded from: in place, or a fresh copy on the loopback S3 server."""
    if request.param == "local":
        return lambda cache: str(cache)
    s3 = request.getfixturevalue("s3")

    def upload(cache: Path) -> str:
        dest = f"bulk/{tmp_path.name}-{len(s3.ls('bulk', refresh=True))}.zarr"
        s3.put(str(cache), dest, recursive=True)
        return f"s3://{dest}"
    return upload


def _per_video_reads(monkeypatch) -> list[str]:
    """Every object key a load reads (fetched whole: GET on object stores), recorded as it is read; on S3 also
    every request the client sends (`op key`), so an extra HEAD per object shows."""
    seen: list[str] = []
    real = bulk.Objects.get
    monkeypatch.setattr(bulk.Objects, "get", lambda self, keys, *a: seen.extend(keys) or real(self, keys, *a))
    try:
        import s3fs
    except ImportError:
        return seen
    real_call = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *a, **kw):
        seen.append(f"{method} {kw.get('Key')}")
        return await real_call(self, method, *a, **kw)
    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    return seen


def test_four_objects_per_video_and_equal_to_zarr(synth, place, monkeypatch):
    url = place(synth)
    seen = _per_video_reads(monkeypatch)
    tab = load_table(url, [VISUAL, AUDIO])
    _assert_equal_to_zarr(tab, _zarr_read(synth, [VISUAL, AUDIO]), [VISUAL, AUDIO])
    for s in (VISUAL, AUDIO):
        for v in tab.videos:
            prefix = f"{safe_key(s)}/{safe_key(v)}/"
            keys = sorted(k for k in seen if k.startswith(prefix))
            assert keys == [prefix + "feats/c/0/0", prefix + "timestamps/c/0", prefix + "valid/c/0",
                            prefix + "zarr.json"], keys
            if url.startswith("s3://"):
                sent = sorted(k.split(" ")[0] for k in seen if f"/{prefix}" in k)
                assert sent == ["get_object"] * 4, sent


def test_a_stale_manifest_loads_the_new_data(synth, place):
    new_same = _rewrite(synth, VISUAL, BAD, 700, seed=5)
    new_len = {s: _rewrite(synth, s, "video004", 333, seed=6) for s in (VISUAL, AUDIO)}
    tab = load_table(place(synth), [VISUAL, AUDIO])
    _assert_equal_to_zarr(tab, _zarr_read(synth, [VISUAL, AUDIO]), [VISUAL, AUDIO])
    np.testing.assert_array_equal(tab.feats[VISUAL][tab.video_slice(BAD)].numpy(), new_same)
    assert tab.lengths[tab.videos.index("video004")] == 333
    np.testing.assert_array_equal(tab.feats[AUDIO][tab.video_slice("video004")].numpy(), new_len[AUDIO])


def test_a_video_written_after_the_manifest_is_loaded(synth, place):
    st = FeatureStore(str(synth))
    for s in (VISUAL, AUDIO):
        f = np.full((50, st.fingerprint(s)["dim"]), 0.5, np.float16)
        st.write_video(s, "late", f, np.ones(50, bool), np.arange(50) / 25.0, 25.0)
    tab = load_table(place(synth), [VISUAL, AUDIO])
    assert "late" in tab.videos and len(tab.videos) == 6
    _assert_equal_to_zarr(tab, _zarr_read(synth, [VISUAL, AUDIO]), [VISUAL, AUDIO])


def _edit_manifest(cache: Path, fn) -> None:
    import polars as pl

    p = cache / "manifest.parquet"
    fn(pl.read_parquet(p)).write_parquet(p)


def test_a_wrong_crc_in_the_manifest_is_no_false_error(synth, place):
    import polars as pl

    def wrong(m):
        crc = json.loads(m.filter(pl.col("video") == BAD)["crc32c"][0])
        crc["feats"] ^= 1
        return m.with_columns(pl.when(pl.col("video") == BAD).then(pl.lit(json.dumps(crc)))
                              .otherwise(pl.col("crc32c")).alias("crc32c"))
    _edit_manifest(synth, wrong)
    _assert_equal_to_zarr(load_table(place(synth), [VISUAL, AUDIO]), _zarr_read(synth, [VISUAL, AUDIO]),
                          [VISUAL, AUDIO])


def test_a_junk_manifest_warns_once_and_reads_the_groups(synth, place, capsys):
    (synth / "manifest.parquet").write_bytes(b"PAR1 not really")
    _assert_equal_to_zarr(load_table(place(synth), [VISUAL, AUDIO]), _zarr_read(synth, [VISUAL, AUDIO]),
                          [VISUAL, AUDIO])
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "manifest.parquet" in warned[0]


def test_a_flipped_data_byte_is_bad_video_with_a_fresh_manifest(synth, place):
    _flip(synth / safe_key(AUDIO) / BAD / "feats" / "c" / "0" / "0", 333)
    url = place(synth)
    with pytest.raises(BadVideo, match=f"feature set '{AUDIO}', video '{BAD}': checksum mismatch \\(feats"):
        load_table(url, [VISUAL, AUDIO])
    assert BAD not in load_table(url, [VISUAL, AUDIO], skip_bad=True).videos


def test_a_group_rewritten_incomplete_since_the_manifest_is_never_loaded(synth, place):
    _rewrite(synth, VISUAL, BAD, 700, seed=9, complete=False)
    url = place(synth)
    with pytest.raises(BadVideo, match=f"video '{BAD}': group is incomplete"):
        load_table(url, [VISUAL])
    assert BAD not in load_table(url, [VISUAL], skip_bad=True).videos


@pytest.mark.parametrize("edit", ["n_frames", "dtype", "dim"])
def test_edited_frame_count_or_fingerprint_is_bad_video(synth, edit):
    if edit == "n_frames":
        p = synth / safe_key(VISUAL) / BAD / "zarr.json"
        d = json.loads(p.read_text())
        d["attributes"]["n_frames"] = 699
        p.write_text(json.dumps(d))
        FeatureStore(str(synth)).write_manifest()
    else:
        p = synth / safe_key(VISUAL) / "zarr.json"
        d = json.loads(p.read_text())
        d["attributes"]["fingerprint"][edit] = "float32" if edit == "dtype" else 25
        p.write_text(json.dumps(d))
    with pytest.raises(BadVideo, match="n_frames 699|dtype 'float32'|dim 25") as e:
        load_table(synth, [VISUAL])
    assert e.value.spec == VISUAL and "\n" not in str(e.value)


def test_long_videos_with_several_small_chunks_stay_on_the_fast_path(tmp_path, monkeypatch):
    from affcli.cache.fingerprint import make_fingerprint

    cache, spec = tmp_path / "long.zarr", "clip:long"
    st = FeatureStore(cache)
    st.ensure_feature_set(spec, make_fingerprint(spec, "visual", 4, "test"))
    n = 70_000
    rng = np.random.default_rng(3)
    st.write_video(spec, "long", rng.standard_normal((n, 4)).astype(np.float16), rng.random(n) > 0.5,
                   np.arange(n) / 30.0, 30.0)
    st.write_manifest()
    assert len(list((cache / safe_key(spec) / "long" / "timestamps" / "c").iterdir())) > 1
    monkeypatch.setattr(bulk, "read_checked", lambda *a, **k: pytest.fail("Zarr fallback on a clean long video"))
    _assert_equal_to_zarr(load_table(cache, [spec]), _zarr_read(cache, [spec]), [spec])
