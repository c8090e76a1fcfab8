"""Benchmark cache reads: `load_table` (checksums on) vs a raw read of the same bytes, and peak memory of loading.

Writes a synthetic cache (videos x frames x 3 feature sets, float16) on local disk, copies it to a loopback S3
server (moto in server mode), then for each place measures in a fresh process:
  * raw:        "a raw numpy read of the same bytes": every object holding what load_table returns (per set and
                video the feats shard, the valid chunk and the timestamps chunk) read whole in one batch (local:
                each file read whole) and viewed as numpy, no Zarr, no checks
  * load_table: affcli.cache.load_table of all sets, every video's checksum verified; `throughput_ratio` = raw
                seconds / load_table seconds (same bytes, so the ratio of throughputs; goal >= 0.8)
  * peak RSS growth during load_table over the tensor bytes it returns (goal <= 1.2)
  * raw_feats:  the feats shards alone read the same way (the comparator before issue 10's review); `vs_raw_feats`
  * raw_all:    every object of the feature-set groups (metadata, feats shards, valid, timestamps) read whole in
                one batch; `vs_raw_all` = its time / load_table's
Each child imports what a training process holds before it loads (torch, polars: heads/loading.py), so the
measurement is the load itself. Reads on S3 are one GET per object (`cache.bulk.single_get`: s3fs otherwise sends a HEAD before each GET), for
load_table and the raw reads alike.

    python bench/cache_io.py --out bench/results/cache_io.json              # default: ~110k frames, a few minutes
    python bench/cache_io.py --videos 550 --frames 5100 --places local      # Aff-Wild2-sized: 2.8M frames x 3 sets
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETS = {"clip:bench": 512, "wav2vec2:bench": 768, "fer:bench": 256}


def make_cache(path: Path, videos: int, frames: int, seed: int = 0) -> int:
    """A cache of `videos` x `frames` rows in each of SETS (float16); returns its feats bytes."""
    from affcli.cache.fingerprint import make_fingerprint
    from affcli.cache.store import FeatureStore

    rng = np.random.default_rng(seed)
    st = FeatureStore(str(path))
    nbytes = 0
    for spec, dim in SETS.items():
        st.ensure_feature_set(spec, make_fingerprint(spec, "visual" if spec != "wav2vec2:bench" else "audio", dim,
                                                     "bench", alignment="centered"))
        block = rng.standard_normal((frames, dim), dtype=np.float32).astype(np.float16)
        for i in range(videos):
            feats = np.roll(block, i, axis=0)
            st.write_video(spec, f"v{i:04d}", feats, np.ones(frames, bool), np.arange(frames) / 30.0, 30.0)
            nbytes += feats.nbytes
    st.write_manifest()
    return nbytes


def _measure(place: str, mode: str) -> dict:
    """Child process: one read of every feats array of the cache at `place` (a path or URL)."""
    import fsspec
    import polars  # noqa: F401  loaded in every training process (heads/loading.py) before load_table runs
    from fsspec.core import url_to_fs

    from affcli.cache import load_table
    from affcli.cache.bulk import single_get
    from affcli.cache.store import FeatureStore, safe_key

    st = FeatureStore(place, mode="r")
    specs = st.feature_sets()
    vids = st.videos(specs[0])
    fs, root = url_to_fs(place)
    arrays = {"raw": ("feats/c/0/0", "valid/c/0", "timestamps/c/0"), "raw_feats": ("feats/c/0/0",)}.get(mode, ())
    keys = [f"{root}/{safe_key(s)}/{safe_key(v)}/{a}" for s in specs for v in vids for a in arrays]
    if mode == "raw_all":
        keys = [k for s in specs for k in fs.find(f"{root}/{safe_key(s)}")]
    rss0 = _reset_peak()
    t = time.perf_counter()
    if mode != "load_table":
        blobs = fs.cat(keys, **single_get(fs)) if not isinstance(fs, fsspec.implementations.local.LocalFileSystem) \
            else {k: Path(k).read_bytes() for k in keys}
        nbytes = sum(np.frombuffer(b, np.uint8).size for b in blobs.values())
        tensor_bytes = nbytes
    else:
        table = load_table(place, specs, threads=8)
        tensor_bytes = sum(t.numel() * t.element_size() for t in table.feats.values())
        nbytes = tensor_bytes
    dt = time.perf_counter() - t
    peak = _peak_rss() - rss0
    return {"seconds": dt, "bytes": nbytes, "mb_s": nbytes / dt / 1e6, "peak_growth_bytes": peak,
            "tensor_bytes": tensor_bytes, "peak_over_tensor": peak / max(1, tensor_bytes), "objects": len(keys)}


def _reset_peak() -> int:
    """Reset the peak-RSS mark (Linux clear_refs 5) and return the current RSS in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status("VmRSS")


def _peak_rss() -> int:
    return _status("VmHWM")


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _child(place: str, mode: str, env: dict) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import cache_io; "
            f"print(json.dumps(cache_io._measure({place!r}, {mode!r})))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{mode} on {place}: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _s3_server() -> tuple[object, dict]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    return server, env


def bench(args: argparse.Namespace) -> dict:
    """Make the cache, then time raw and load_table reads at each place."""
    work = Path(args.work or tempfile.mkdtemp(prefix="affcli-bench-cacheio-"))
    local = work / "cache.zarr"
    t = time.perf_counter()
    nbytes = make_cache(local, args.videos, args.frames)
    out = {"videos": args.videos, "frames_per_video": args.frames, "sets": SETS, "feats_bytes": nbytes,
           "make_s": time.perf_counter() - t, "cores": os.cpu_count(), "host": platform.node(),
           "load": os.getloadavg(), "places": {}}
    print(f"cache: {args.videos} videos x {args.frames} frames x {len(SETS)} sets = {nbytes / 1e6:.0f} MB "
          f"(made in {out['make_s']:.0f} s)", flush=True)
    places = {"local": (str(local), {})}
    server = None
    if "s3" in args.places:
        server, env = _s3_server()
        os.environ.update(env)
        import fsspec

        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("bench")
        t = time.perf_counter()
        fs.put(str(local), "bench/cache.zarr", recursive=True)
        print(f"uploaded to loopback S3 in {time.perf_counter() - t:.0f} s", flush=True)
        places["s3"] = ("s3://bench/cache.zarr", env)
    try:
        for name, (place, env) in places.items():
            if name not in args.places:
                continue
            res = {m: min((_child(place, m, env) for _ in range(args.repeat)), key=lambda r: r["seconds"])
                   for m in ("raw", "load_table", "raw_feats", "raw_all")}
            lt = res["load_table"]
            vs = {m: res[m]["seconds"] / lt["seconds"] for m in ("raw", "raw_feats", "raw_all")}
            out["places"][name] = {**res, "throughput_ratio": vs["raw"], "vs_raw_feats": vs["raw_feats"],
                                   "vs_raw_all": vs["raw_all"], "load_after": os.getloadavg()}
            print(f"{name:5s} load_table {lt['seconds']:.2f} s ({lt['mb_s']:.0f} MB/s of features)  "
                  f"peak RSS growth / tensor bytes {lt['peak_over_tensor']:.2f}  |  "
                  + "  ".join(f"{m} {res[m]['seconds']:.2f} s ({res[m]['objects']} objects): {vs[m]:.2f}"
                              for m in vs) + f"  |  load avg {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        if server is not None:
            server.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=40)
    p.add_argument("--frames", type=int, default=2700, help="frames per video (Aff-Wild2: ~5100 on average)")
    p.add_argument("--places", default="local,s3", help="comma list of local, s3")
    p.add_argument("--repeat", type=int, default=2, help="best of N reads per measurement")
    p.add_argument("--work", help="keep the cache here")
    p.add_argument("--out", help="write results JSON here")
    args = p.parse_args()
    res = bench(args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
