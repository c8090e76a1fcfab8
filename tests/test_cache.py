"""The cache contract: atomic per-video writes, fingerprints, manifest, verify, loaders, HDF5 interchange."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from affcli.cache import CacheError, FeatureStore, FingerprintMismatch, as_dask, load_table
from affcli.cache.h5io import export_h5, import_h5
from affcli.cache.store import safe_key
from affcli.cache.verify import summary, verify

FP = {"spec": "clip:tiny", "modality": "visual", "weights_sha256": "abc", "preprocessing": {"crop": 32}, "dim": 8,
      "dtype": "float16", "alignment": None, "versions": {"torch": "x"}}


def _video(n: int, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d)).astype(np.float32)
    v = rng.random(n) > 0.2
    f[~v] = 0
    return f, v, np.arange(n) / 30.0


@pytest.fixture()
def store(tmp_path):
    s = FeatureStore(tmp_path / "c.zarr")
    s.ensure_feature_set("clip:tiny", FP)
    return s


def test_write_read_roundtrip_and_manifest(store, tmp_path):
    f, v, t = _video(50)
    store.write_video("clip:tiny", "vid/a 1", f, v, t, 30.0, "a.mp4")
    rec = store.read_video("clip:tiny", "vid/a 1")
    assert rec.feats.dtype == np.float16 and rec.feats.shape == (50, 8)
    np.testing.assert_array_equal(rec.feats, f.astype(np.float16))
    np.testing.assert_array_equal(rec.valid, v)
    np.testing.assert_array_equal(rec.timestamps, t)
    assert store.videos("clip:tiny") == ["vid/a 1"]
    store.record_failure("clip:tiny", "broken", "broken.mp4: moov atom not found")
    path = store.write_manifest()
    import polars as pl

    m = pl.read_parquet(path)
    assert set(m["status"]) == {"ok", "failed"}
    assert m.filter(pl.col("status") == "failed")["error"][0].startswith("broken.mp4")
    assert verify(tmp_path / "c.zarr") == []
    assert summary(tmp_path / "c.zarr")[0]["frames"] == 50
    assert summary(tmp_path / "c.zarr")[0]["modality"] == "visual"


def test_video_is_a_handful_of_files(store, tmp_path):
    f, v, t = _video(3000, 8)
    store.write_video("clip:tiny", "long", f, v, t, 30.0)
    files = [p for p in (tmp_path / "c.zarr" / safe_key("clip:tiny") / "long").rglob("*") if p.is_file()]
    assert len(files) <= 7


def test_incomplete_video_is_invisible_and_rewritten(store, tmp_path):
    f, v, t = _video(20)
    store.write_video("clip:tiny", "a", f, v, t, 30.0)
    grp = store.root[safe_key("clip:tiny")]["a"]
    grp.attrs["complete"] = False  # what a kill between arrays and commit leaves
    assert not store.has_video("clip:tiny", "a")
    assert store.videos("clip:tiny") == []
    assert any("incomplete" in p for p in verify(tmp_path / "c.zarr"))
    store.write_video("clip:tiny", "a", f, v, t, 30.0)
    assert store.has_video("clip:tiny", "a") and verify(tmp_path / "c.zarr") == []


def test_complete_video_is_never_overwritten(store):
    f, v, t = _video(20)
    store.write_video("clip:tiny", "a", f, v, t, 30.0)
    with pytest.raises(CacheError, match="already complete"):
        store.write_video("clip:tiny", "a", f * 0, v, t, 30.0)
    np.testing.assert_array_equal(store.read_video("clip:tiny", "a").feats, f.astype(np.float16))


def test_fingerprint_mismatch_refused(store):
    other = dict(FP, weights_sha256="different")
    with pytest.raises(FingerprintMismatch, match="weights_sha256"):
        store.ensure_feature_set("clip:tiny", other)
    with pytest.warns(UserWarning, match="library versions"):
        store.ensure_feature_set("clip:tiny", dict(FP, versions={"torch": "y"}))


def test_bad_arrays_refused(store):
    f, v, t = _video(10)
    f[3, 2] = np.nan
    with pytest.raises(CacheError, match="NaN"):
        store.write_video("clip:tiny", "nan", f, v, t, 30.0)
    with pytest.raises(CacheError, match="dim"):
        store.write_video("clip:tiny", "wide", np.zeros((10, 9)), v, t, 30.0)
    assert store.videos("clip:tiny", complete=False) == []


def test_verify_detects_corruption(store, tmp_path):
    f, v, t = _video(40)
    store.write_video("clip:tiny", "a", f, v, t, 30.0)
    arr = store.root[safe_key("clip:tiny")]["a"]["feats"]
    arr[5, 0] = 123.0
    probs = verify(tmp_path / "c.zarr")
    assert any("checksum" in p for p in probs)


def test_not_a_cache(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(CacheError, match="no feature cache"):
        FeatureStore(tmp_path / "x", mode="r")


def test_load_table_and_dask(store, tmp_path):
    fp2 = dict(FP, spec="wav2vec2:tiny", dim=4, modality="audio")
    store.ensure_feature_set("wav2vec2:tiny", fp2)
    data = {}
    for i, n in enumerate([15, 7, 30]):
        f, v, t = _video(n, 8, seed=i)
        a, va, _ = _video(n, 4, seed=10 + i)
        store.write_video("clip:tiny", f"v{i}", f, v, t, 30.0)
        store.write_video("wav2vec2:tiny", f"v{i}", a, va, t, 30.0)
        data[f"v{i}"] = (f, a)
    store.write_video("clip:tiny", "only-visual", *_video(5), 30.0)
    tab = load_table(tmp_path / "c.zarr", ["clip:tiny", "wav2vec2:tiny"])
    assert tab.videos == ["v0", "v1", "v2"]
    assert tab.feats["clip:tiny"].shape == (52, 8) and tab.feats["wav2vec2:tiny"].dtype == torch.float16
    sl = tab.video_slice("v1")
    np.testing.assert_array_equal(tab.feats["wav2vec2:tiny"][sl].numpy(), data["v1"][1].astype(np.float16))
    arr, offsets, vids = as_dask(tmp_path / "c.zarr", "clip:tiny", ["v2", "v0"])
    assert vids == ["v2", "v0"] and list(offsets) == [0, 30, 45]
    np.testing.assert_array_equal(arr[30:45].compute(), data["v0"][0].astype(np.float16))
    with pytest.raises(CacheError, match="lacks"):
        load_table(tmp_path / "c.zarr", ["wav2vec2:tiny"], ["only-visual"])
    with pytest.raises(CacheError, match="no feature set"):
        load_table(tmp_path / "c.zarr", ["ast:tiny"])


def test_text_embeddings(store):
    store.write_text_embeddings("expr8", "clip:tiny", ["a", "b"], np.eye(2, 8))
    prompts, emb, meta = store.read_text_embeddings("expr8")
    assert prompts == ["a", "b"] and emb.shape == (2, 8) and meta["spec"] == "clip:tiny"
    with pytest.raises(CacheError, match="no text embeddings"):
        store.read_text_embeddings("va9")


def test_h5_roundtrip_and_foreign_import(store, tmp_path):
    for i in range(2):
        store.write_video("clip:tiny", f"v{i}", *_video(12, seed=i), 25.0)
    store.write_text_embeddings("expr8", "clip:tiny", ["a", "b"], np.ones((2, 8)))
    out = export_h5(tmp_path / "c.zarr", tmp_path / "x.h5")
    counts = import_h5(out, tmp_path / "d.zarr")
    assert counts == {"clip:tiny": 2}
    d = FeatureStore(tmp_path / "d.zarr", mode="r")
    for i in range(2):
        a, b = store.read_video("clip:tiny", f"v{i}"), d.read_video("clip:tiny", f"v{i}")
        np.testing.assert_array_equal(a.feats, b.feats)
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert d.fingerprint("clip:tiny") == store.fingerprint("clip:tiny")
    assert import_h5(out, tmp_path / "d.zarr") == {"clip:tiny": 0}
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["videoA"] = np.random.rand(9, 6).astype(np.float32)
        f["videoB"] = np.random.rand(4, 6).astype(np.float32)
    with pytest.raises(CacheError, match="--spec"):
        import_h5(tmp_path / "foreign.h5", tmp_path / "e.zarr")
    with pytest.raises(CacheError, match="--modality visual|audio"):
        import_h5(tmp_path / "foreign.h5", tmp_path / "e.zarr", spec="vggface:other")
    with pytest.raises(CacheError, match="'sound' is not one of visual, audio"):
        import_h5(tmp_path / "foreign.h5", tmp_path / "e.zarr", spec="vggface:other", modality="sound")
    assert import_h5(tmp_path / "foreign.h5", tmp_path / "e.zarr", spec="vggface:other", fps=10,
                     modality="audio") == {"vggface:other": 2}
    e = FeatureStore(tmp_path / "e.zarr", mode="r")
    assert e.read_video("vggface:other", "videoB").timestamps[1] == 0.1
    fp = e.fingerprint("vggface:other")
    assert (fp["modality"], fp["dim"]) == ("audio", 6) and e.modality("vggface:other") == "audio"
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(CacheError, match="not an HDF5"):
        import_h5(tmp_path / "junk.h5", tmp_path / "e.zarr", spec="x")


def _make_legacy(store: FeatureStore, spec: str) -> None:
    """Strip the modality from a set's stored fingerprint, as caches written before it was recorded are."""
    grp = store.root[safe_key(spec)]
    fp = dict(grp.attrs["fingerprint"])
    del fp["modality"]
    grp.attrs["fingerprint"] = fp


def test_new_set_needs_modality_and_dim(store):
    with pytest.raises(CacheError, match="modality None is not one of visual, audio"):
        store.ensure_feature_set("x:a", {k: v for k, v in FP.items() if k != "modality"} | {"spec": "x:a"})
    with pytest.raises(CacheError, match="positive int dim"):
        store.ensure_feature_set("x:b", dict(FP, spec="x:b", dim=None))
    assert "x:a" not in store.feature_sets() and "x:b" not in store.feature_sets()
    with pytest.raises(FingerprintMismatch, match="modality"):
        store.ensure_feature_set("clip:tiny", dict(FP, modality="audio"))


def test_legacy_set_without_modality(store, tmp_path):
    store.write_video("clip:tiny", "v0", *_video(6), 30.0)
    _make_legacy(store, "clip:tiny")
    with pytest.raises(CacheError, match=r"no modality in its fingerprint.*cache set-modality .* clip:tiny visual\|audio"):
        store.modality("clip:tiny")
    assert any("set-modality" in p for p in verify(tmp_path / "c.zarr", deep=False))
    assert load_table(tmp_path / "c.zarr", ["clip:tiny"]).modality == {}
    out = export_h5(tmp_path / "c.zarr", tmp_path / "old.h5")
    with pytest.raises(CacheError, match="exported without a modality; pass --modality"):
        import_h5(out, tmp_path / "n.zarr")
    assert import_h5(out, tmp_path / "n.zarr", modality="visual") == {"clip:tiny": 1}
    assert FeatureStore(tmp_path / "n.zarr", mode="r").modality("clip:tiny") == "visual"
    with pytest.raises(CacheError, match="not one of"):
        store.set_modality("clip:tiny", "face")
    store.set_modality("clip:tiny", "visual")
    assert store.modalities() == {"clip:tiny": "visual"}
    assert load_table(tmp_path / "c.zarr", ["clip:tiny"]).modality == {"clip:tiny": "visual"}
    with pytest.raises(CacheError, match="already 'visual'"):
        store.set_modality("clip:tiny", "audio")


def test_resume_records_modality_of_a_legacy_set(store):
    _make_legacy(store, "clip:tiny")
    store.ensure_feature_set("clip:tiny", FP)
    assert store.fingerprint("clip:tiny") == FP


def test_remove_feature_set_rewrites_manifest(store, tmp_path):
    import polars as pl

    store.ensure_feature_set("wav2vec2:tiny", dict(FP, spec="wav2vec2:tiny", dim=4, modality="audio"))
    store.write_video("clip:tiny", "v0", *_video(6), 30.0)
    store.write_video("wav2vec2:tiny", "v0", *_video(6, 4), 30.0)
    store.write_manifest()
    assert set(pl.read_parquet(tmp_path / "c.zarr" / "manifest.parquet")["feature_set"]) == {"clip:tiny", "wav2vec2:tiny"}
    store.remove_feature_set("clip:tiny")
    m = pl.read_parquet(tmp_path / "c.zarr" / "manifest.parquet")
    assert m["feature_set"].to_list() == ["wav2vec2:tiny"] and store.feature_sets() == ["wav2vec2:tiny"]
