"""Batched checked reads for `load_table`: the data objects of many videos fetched with few requests, decoded without
Zarr straight into the caller's rows, and checked against the video's per-array CRC-32C before they count.

Array metadata is not read: each array's layout follows from n_frames, the fingerprint's dim and dtype and
`FeatureStore.write_video` (feats: one shard of CHUNK_BYTES inner chunks, raw, with a crc32c-checked index; valid,
timestamps, face arrays: Zarr's default chunk grid, zstd). So a load fetches per video and set the feats shard and
the valid and timestamps chunks (and face chunks where the set has a face record). n_frames come from
manifest.parquet (one GET) for the videos it lists as ok, so the table is sized before anything else is read; each
such video's group zarr.json is fetched in the same batch as its data, and its own `complete` mark and CRCs are what
the data is checked against (a video marked incomplete since the manifest was built is never returned). Videos the
manifest does not list are listed from their group's zarr.json. A video whose bytes do not decode or check is read
through Zarr (`read_checked`), which names what is wrong. Caches written before the CRC-32C are checked with the
SHA-256 over every array (face record included).
"""
from __future__ import annotations

import inspect
import io
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from affcli.cache import coord
from affcli.cache.checked import describe_error, read_checked
from affcli.cache.crc import ATTR as CRC_ATTR
from affcli.cache.crc import crc32c
from affcli.cache.errors import BadVideo
from affcli.cache.store import FACE_ARRAYS as STORED_FACE_ARRAYS
from affcli.cache.store import (FACES_GROUP, FaceRecord, FeatureStore, stored_arrays, array_sha256,
                                 feats_chunk_rows, safe_key)
from affcli.common.notices import warn
from affcli.common.threads import usable_cpus

BATCH_BYTES = 8 << 20
AHEAD = 2
MANIFEST = "manifest.parquet"
CORE = ("feats", "valid", "timestamps")
FACE_ARRAYS = tuple(f"{FACES_GROUP}/{a}" for a in STORED_FACE_ARRAYS)
EMPTY = 2 ** 64 - 1
SHARD = "feats/c/0/0"
MISMATCH = "checksum mismatch ({} changed after writing); re-extract it or pass --skip-bad"


class Stale(Exception):
    """A video's frame count changed after the table was sized from the manifest: load again without it."""


class _Fallback(Exception):
    """The fast path cannot vouch for these bytes (other layout, missing object, checksum): look closer."""


@dataclass
class Listed:
    """A complete video of a feature set as listed: its id, group key, attributes and where they came from."""

    video: str
    key: str
    attrs: dict[str, Any]
    from_manifest: bool = False


@dataclass
class Target:
    """Where one video's rows go: `feats[rows]`, `valid[rows]` and (for the first set) `timestamps[rows]`."""

    index: int
    listed: Listed
    rows: slice


class Objects:
    """The store's objects by key (paths under the store root): whole small objects, and the feats shard."""

    def __init__(self, store: FeatureStore):
        self.fs, root = coord.store_fs(store.path, store.storage_options)
        self.root = root.rstrip("/")
        self.local = coord.is_local(self.fs)
        self.cat_options = single_get(self.fs)

    def subdirs(self, key: str) -> list[str]:
        """Names of the folders (prefixes) under `key`: one listing request on object stores."""
        if self.local:
            with os.scandir(f"{self.root}/{key}") as it:
                return [e.name for e in it if e.is_dir()]
        return [str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
                for e in self.fs.ls(f"{self.root}/{key}", detail=True, refresh=True) if e.get("type") == "directory"]

    def get(self, keys: list[str], shards: frozenset[str] = frozenset()) -> dict[str, Any]:
        """{key: bytes, or None where missing}; on local disk the `shards` come back as paths to read in place.
        Objects elsewhere arrive in one concurrent request batch; errors other than a missing key come back as
        the exception, raised where the object is used."""
        if self.local:
            out: dict[str, Any] = {}
            for k in keys:
                p = f"{self.root}/{k}"
                try:
                    out[k] = (p if os.path.isfile(p) else None) if k in shards else Path(p).read_bytes()
                except (FileNotFoundError, NotADirectoryError):
                    out[k] = None
                except OSError as e:
                    out[k] = e
            return out
        got = self.fs.cat([f"{self.root}/{k}" for k in keys], on_error="return", **self.cat_options) if keys else {}
        got = {k[len(self.root) + 1:] if k.startswith(self.root + "/") else k: v for k, v in got.items()}
        return {k: (None if isinstance(got.get(k), FileNotFoundError) else got.get(k)) for k in keys}


def single_get(fs: Any) -> dict[str, Any]:
    """`cat` options that make each whole-object read one GET: s3fs otherwise sends a HEAD first, to split large
    objects into concurrent ranges, which doubles the requests of a load made of small objects."""
    cat_file = getattr(type(fs), "_cat_file", None)
    return {"max_concurrency": 1} if cat_file and "max_concurrency" in inspect.signature(cat_file).parameters else {}


def list_videos(objects: Objects, store: FeatureStore, specs: list[str],
                use_manifest: bool = True) -> dict[str, dict[str, Listed]]:
    """{spec: {video id: Listed}} of the complete videos of feature sets: a listing per set; the attributes from
    the manifest where it has the video's row, else one batch of the remaining video groups' metadata."""
    keys = {s: sorted(objects.subdirs(store.key_of(s))) for s in specs}
    rows = read_manifest(objects, store) if use_manifest else {}
    out: dict[str, dict[str, Listed]] = {s: {} for s in specs}
    need: list[tuple[str, str]] = []
    for s in specs:
        left = set(keys[s])
        for vid, attrs in rows.get(s, {}).items():
            k = safe_key(vid)
            if k in left:
                out[s][vid] = Listed(vid, k, attrs, True)
                left.discard(k)
        need += [(s, k) for k in sorted(left)]
    metas = objects.get([f"{store.key_of(s)}/{k}/zarr.json" for s, k in need])
    for s, k in need:
        attrs = _group_attrs(metas[f"{store.key_of(s)}/{k}/zarr.json"])
        if attrs is not None and attrs.get("complete"):
            out[s][str(attrs.get("video_id", ""))] = Listed(str(attrs.get("video_id", "")), k, attrs)
    return out


def read_manifest(objects: Objects, store: FeatureStore) -> dict[str, dict[str, dict[str, Any]]]:
    """{spec: {video: attrs}} of the manifest's ok rows that carry n_frames and the per-array CRC-32C; {} when
    there is no manifest or it predates the crc32c column; a warning line when it cannot be read."""
    raw = objects.get([MANIFEST]).get(MANIFEST)
    if raw is None:
        return {}
    try:
        if isinstance(raw, BaseException):
            raise raw
        import polars as pl  # what wrote it; training has it loaded already (heads.loading)

        table = pl.read_parquet(io.BytesIO(raw))
        if CRC_ATTR not in table.columns:
            return {}
        cols = table.select(["feature_set", "video", "status", "n_frames", "fps", CRC_ATTR]).to_dict(as_series=False)
    except Exception as e:  # junk, truncated, or a foreign schema
        warn(f"{store.path}/{MANIFEST}: unreadable ({describe_error(e)}); reading every video's attributes instead "
             f"(the next extract rebuilds it)")
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for spec, vid, status, n, fps, crc in zip(*cols.values()):
        crc = _crc_of(crc)
        if status == "ok" and isinstance(n, int) and n > 0 and crc is not None and isinstance(vid, str):
            out.setdefault(spec, {})[vid] = {"video_id": vid, "n_frames": n, "fps": fps, "complete": True,
                                             CRC_ATTR: crc}
    return out


def _crc_of(text: Any) -> dict[str, int] | None:
    """The manifest's crc32c cell as {array: CRC}, when it covers the arrays a load returns."""
    try:
        crc = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    ok = isinstance(crc, dict) and all(isinstance(crc.get(a), int) for a in CORE)
    return crc if ok else None


def _group_attrs(raw: Any) -> dict[str, Any] | None:
    """A video group's attributes from its zarr.json bytes (None when missing or not a Zarr v3 group)."""
    if raw is None or isinstance(raw, BaseException):
        return None
    try:
        d = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(d, dict) or d.get("zarr_format") != 3 or d.get("node_type") != "group":
        return None
    attrs = d.get("attributes")
    return attrs if isinstance(attrs, dict) else {}


def read_set(store: FeatureStore, objects: Objects, spec: str, fp: dict[str, Any], targets: list[Target],
             feats: np.ndarray, valid: np.ndarray, timestamps: np.ndarray | None, threads: int,
             on_bad: Callable[[int, BadVideo], None]) -> None:
    """Fill the rows of every target from feature set `spec`, checked; `on_bad(index, BadVideo)` for a video that
    fails (it raises to stop, or returns to leave the video out); Stale when a video's frame count changed."""
    reader = _VideoReader(store, objects, spec, store.key_of(spec), fp, feats, valid, timestamps)
    if objects.local:
        ex = ThreadPoolExecutor(max(1, min(threads, usable_cpus(load_aware=False))))  # more threads than cores only add switching
        try:
            for t, bad in ex.map(lambda t: (t, reader.read(t, reader.fetch([t]))), targets):
                if bad is not None:
                    on_bad(t.index, bad)
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
        return
    batches = _batches(targets, max(1, int(fp.get("dim") or 1)) * 2)
    ex = ThreadPoolExecutor(AHEAD)
    try:
        ahead = [ex.submit(reader.fetch, b) for b in batches[:AHEAD]]
        for i, batch in enumerate(batches):
            got = ahead.pop(0).result()
            if i + AHEAD < len(batches):
                ahead.append(ex.submit(reader.fetch, batches[i + AHEAD]))
            for t in batch:
                bad = reader.read(t, got)
                if bad is not None:
                    on_bad(t.index, bad)
            del got
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _batches(targets: list[Target], row_bytes: int) -> list[list[Target]]:
    """Consecutive targets in groups of about BATCH_BYTES of features (at least one video each)."""
    out: list[list[Target]] = []
    size = BATCH_BYTES
    for t in targets:
        n = (t.rows.stop - t.rows.start) * row_bytes
        if size + n > BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(t)
        size += n
    return out


class _VideoReader:
    """Reads, decodes and checks the videos of one feature set into the destination arrays."""

    def __init__(self, store: FeatureStore, objects: Objects, spec: str, skey: str, fp: dict[str, Any],
                 feats: np.ndarray, valid: np.ndarray, timestamps: np.ndarray | None):
        self.store, self.objects, self.spec, self.skey, self.fp = store, objects, spec, skey, fp
        self.feats, self.valid, self.timestamps = feats, valid, timestamps
        self.dim = fp.get("dim")

    def base(self, t: Target) -> str:
        return f"{self.skey}/{t.listed.key}"

    def names(self, attrs: dict[str, Any], faces: bool = False) -> list[str]:
        """The arrays a load reads and checks: every array the video's checksum covers (with a per-array CRC the
        attributes name them; with the SHA-256 only, the face record's presence tells)."""
        crc = attrs.get(CRC_ATTR)
        if isinstance(crc, dict):
            return list(CORE) + [a for a in FACE_ARRAYS if a in crc]
        return list(CORE) + (list(FACE_ARRAYS) if faces else [])

    def keys(self, t: Target, attrs: dict[str, Any], faces: bool = False) -> list[str]:
        """The objects of the video's arrays, as `write_video` lays them out for its n_frames and dim."""
        n, b = attrs.get("n_frames"), self.base(t)
        if not _count(n) or not _count(self.dim):
            return []
        out = [f"{b}/{SHARD}"]
        for nm in self.names(attrs, faces)[1:]:
            shape, dtype = _EXPECTED[nm](n, self.dim)
            out += [f"{b}/{nm}/{k}" for k, _ in _chunks(shape, np.dtype(dtype).itemsize)]
        if not faces and not isinstance(attrs.get(CRC_ATTR), dict):
            out.append(f"{b}/{FACES_GROUP}/zarr.json")
        return out

    def fetch(self, batch: list[Target], attrs: dict[str, Any] | None = None) -> dict[str, Any]:
        """One concurrent fetch of the objects of a batch (a second one for face arrays of SHA-256-only videos)."""
        def of(t: Target) -> dict[str, Any]:
            return t.listed.attrs if attrs is None else attrs

        marks = [f"{self.base(t)}/zarr.json" for t in batch if attrs is None and t.listed.from_manifest]
        got = self.objects.get([k for t in batch for k in self.keys(t, of(t))] + marks,
                               frozenset(f"{self.base(t)}/{SHARD}" for t in batch))
        more = [k for t in batch if got.get(f"{self.base(t)}/{FACES_GROUP}/zarr.json") is not None
                for k in self.keys(t, of(t), faces=True) if k not in got]
        if more:
            got.update(self.objects.get(more))
        return got

    def read(self, t: Target, got: dict[str, Any]) -> BadVideo | None:
        """Decode and check one video into its rows; the BadVideo when it cannot be trusted."""
        try:
            attrs = t.listed.attrs
            if t.listed.from_manifest:  # the group's own mark, fetched with the data, vouches it is still complete
                attrs = self._own_attrs(t, got.get(f"{self.base(t)}/zarr.json"))
            try:
                self._decode(t, got, attrs)
                return None
            except Exception:  # another layout, a failed request, damaged bytes: look closer
                pass
            self._through_zarr(t)
            return None
        except BadVideo as e:
            return e

    def _own_attrs(self, t: Target, raw: Any) -> dict[str, Any]:
        """The video group's own attributes from its zarr.json bytes (authoritative over the manifest): complete,
        same frame count."""
        attrs = _group_attrs(raw)
        if attrs is None:
            what = "missing" if raw is None else "unreadable"
            raise BadVideo(self.store.path, self.spec, t.listed.video, f"group metadata (zarr.json) is {what}")
        if not attrs.get("complete") or attrs.get("video_id") != t.listed.video:
            raise BadVideo(self.store.path, self.spec, t.listed.video,
                           "group is incomplete (an interrupted write, or rewritten since manifest.parquet "
                           "was built); re-run extract or pass --skip-bad")
        if attrs.get("n_frames") != t.rows.stop - t.rows.start:
            raise Stale(f"{self.spec}/{t.listed.video}")
        return attrs

    def _through_zarr(self, t: Target) -> None:
        """Read the video through Zarr with its shapes and dtype checked, then its checksums."""
        rec = read_checked(self.store, self.spec, t.listed.video, self.fp, checksum=False)
        if rec.feats.shape[0] != t.rows.stop - t.rows.start:
            raise Stale(f"{self.spec}/{t.listed.video}")
        arrays = stored_arrays(rec.feats, rec.valid, rec.timestamps, rec.faces)
        try:
            self._check(rec.attrs, arrays)
        except _Fallback as e:
            raise BadVideo(self.store.path, self.spec, t.listed.video, MISMATCH.format(e)) from None
        self.feats[t.rows], self.valid[t.rows] = rec.feats, rec.valid
        if self.timestamps is not None:
            self.timestamps[t.rows] = rec.timestamps

    def _decode(self, t: Target, got: dict[str, Any], attrs: dict[str, Any]) -> None:
        n, b = attrs.get("n_frames"), self.base(t)
        if (not _count(n) or n != t.rows.stop - t.rows.start or not _count(self.dim)
                or str(self.fp.get("dtype") or "float16") != "float16"):
            raise _Fallback("layout")
        _read_shard(got.get(f"{b}/{SHARD}"), self.feats[t.rows])
        out = {"feats": self.feats[t.rows]}
        for nm in self.names(attrs, got.get(f"{b}/{FACES_GROUP}/zarr.json") is not None)[1:]:
            shape, dtype = _EXPECTED[nm](n, self.dim)
            out[nm] = _small_array(got, f"{b}/{nm}", shape, dtype)
        self._check(attrs, out)
        self.valid[t.rows] = out["valid"]
        if self.timestamps is not None:
            self.timestamps[t.rows] = out["timestamps"]

    def _check(self, attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """_Fallback naming the first array that disagrees with its CRC-32C (or the data with the SHA-256)."""
        crc = attrs.get(CRC_ATTR)
        if isinstance(crc, dict):
            for nm in self.names(attrs):
                if nm not in arrays or crc.get(nm) != crc32c(arrays[nm]):
                    raise _Fallback(nm)
            return
        faces = None
        if f"{FACES_GROUP}/box" in arrays:
            faces = FaceRecord(*(arrays[a] for a in FACE_ARRAYS))
        if attrs.get("sha256") != array_sha256(arrays["feats"], arrays["valid"], arrays["timestamps"], faces):
            raise _Fallback("data")


_EXPECTED: dict[str, Callable[[int, int], tuple[tuple[int, ...], str]]] = {
    "feats": lambda n, d: ((n, d), "float16"),
    "valid": lambda n, d: ((n,), "bool"),
    "timestamps": lambda n, d: ((n,), "float64"),
    f"{FACES_GROUP}/box": lambda n, d: ((n, 4), "float32"),
    f"{FACES_GROUP}/score": lambda n, d: ((n,), "float32"),
    f"{FACES_GROUP}/landmarks": lambda n, d: ((n, 5, 2), "float32"),
}


def _count(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n > 0


def _chunks(shape: tuple[int, ...], itemsize: int) -> list[tuple[str, tuple[slice, ...]]]:
    """(chunk key, region) of each chunk of an array Zarr created with its default chunk grid."""
    try:
        from zarr.core.chunk_grids import _guess_chunks

        cs = tuple(int(c) for c in _guess_chunks(shape, itemsize))
    except ImportError:  # another Zarr: guess one chunk; a wrong guess fails the length check and falls back
        cs = shape
    grid = [range(math.ceil(s / c)) for s, c in zip(shape, cs)]
    return [("c/" + "/".join(map(str, idx)), tuple(slice(i * c, min(s, (i + 1) * c)) for i, c, s in zip(idx, cs, shape)))
            for idx in np.ndindex(*(len(g) for g in grid))]


def _small_array(got: dict[str, Any], prefix: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """An array from its zstd chunks (Zarr's fill value 0 where a chunk was never written)."""
    from numcodecs import Zstd

    dt = np.dtype(dtype)
    out = np.zeros(shape, dt)
    regions = _chunks(shape, dt.itemsize)
    full = tuple(r.stop - r.start for r in regions[0][1])
    for key, region in regions:
        raw = got.get(f"{prefix}/{key}")
        if isinstance(raw, BaseException):
            raise raw
        if raw is None:
            continue
        data = Zstd().decode(raw)
        if len(data) != int(np.prod(full)) * dt.itemsize:
            raise _Fallback(f"{prefix} chunk holds {len(data)} bytes")
        a = np.frombuffer(data, dtype=dt.newbyteorder("<")).reshape(full)
        out[region] = a[tuple(slice(0, r.stop - r.start) for r in region)]
    return out


def _read_shard(shard: bytes | str | BaseException | None, out: np.ndarray) -> None:
    """Decode the feats shard `write_video` wrote for `out`'s [n, dim] (bytes, or a local path read in place)."""
    if isinstance(shard, BaseException):
        raise shard
    n, dim = out.shape
    rows = feats_chunk_rows(n, dim)
    if shard is None:  # every inner chunk equal to the fill value: Zarr wrote none
        out[...] = 0
        return
    src = _FileSource(shard) if isinstance(shard, str) else _BytesSource(shard)
    try:
        k = -(-n // rows)
        ilen = 16 * k + 4
        if src.size < ilen:
            raise _Fallback("feats shard is shorter than its index")
        tail = src.read(src.size - ilen, ilen)
        if crc32c(np.frombuffer(tail[:-4], np.uint8)) != int.from_bytes(tail[-4:], "little"):
            raise _Fallback("feats shard index")
        index = np.frombuffer(tail[:-4], "<u8").reshape(k, 2)
        chunk_bytes = rows * dim * 2
        flat = out.reshape(-1).view(np.uint8)
        for j in range(k):
            r0, r1 = j * rows, min(n, (j + 1) * rows)
            off, nb = int(index[j, 0]), int(index[j, 1])
            if off == EMPTY and nb == EMPTY:
                out[r0:r1] = 0
                continue
            if nb != chunk_bytes or off + nb > src.size - ilen:
                raise _Fallback(f"feats shard index entry {j} ({off}, {nb}) does not fit the shard")
            src.read_into(off, flat[r0 * dim * 2:r1 * dim * 2])
    finally:
        src.close()


class _BytesSource:
    def __init__(self, data: bytes):
        self.data, self.size = data, len(data)

    def read(self, off: int, n: int) -> bytes:
        return self.data[off:off + n]

    def read_into(self, off: int, out: np.ndarray) -> None:
        out[:] = np.frombuffer(self.data, np.uint8, len(out), off)

    def close(self) -> None:
        pass


class _FileSource:
    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def read(self, off: int, n: int) -> bytes:
        return os.pread(self.fd, n, off)

    def read_into(self, off: int, out: np.ndarray) -> None:
        view, done = memoryview(out), 0
        while done < len(out):
            got = os.preadv(self.fd, [view[done:]], off + done)
            if got <= 0:
                raise _Fallback("feats shard ends early")
            done += got

    def close(self) -> None:
        os.close(self.fd)
