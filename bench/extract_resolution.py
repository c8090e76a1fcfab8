"""Extraction at high resolution: wall time and peak RSS of `affcli extract` on one synthetic video per size.

Decoding memory is bounded by bytes (`--decode-memory-mb`), not by a frame count: a 4K batch holds a few frames, an
8K batch one, FFmpeg runs no more frame threads than fit a batch's share, and the face stage never makes a whole
frame float (row strips, pipeline/strips.py), so the peak stays near the budget whatever the resolution. Each size
runs `affcli extract` in a fresh process (peak RSS = that process's ru_maxrss); the video (a face moving over a
smooth background, h264) is written once per size into --work, by a child process of its own (a child's ru_maxrss
counts the RSS of the parent it was forked from, so the parent stays small), and reused.

    python bench/extract_resolution.py --sizes 3840x2160 7680x4320 --frames 150 --face mtcnn --out r.json
    python bench/extract_resolution.py --sizes 3840x2160 --frames 150 --decode-memory-mb 1024 --out r.json
    python bench/extract_resolution.py --sizes 1920x1080 3840x2160 7680x4320 --decode-only --out r.json

`--decode-only` instead decodes each video alone in a child (no models, the same per-batch byte budget) and reports
its peak RSS: beside one batch, that is the codec's own frames (FFmpeg's reference frames), which FFmpeg's thread
count (capped by the budget, media.decoder_threads) keeps near one batch.

`--dump-crops VIDEO OUT.npz [--face F] [--detect-every K]` runs extract's decode and face stages (the default budget)
over VIDEO and saves every crop and face array, so two versions of the code can be compared bit for bit:

    PYTHONPATH=<old tree> python bench/extract_resolution.py --dump-crops v.mp4 old.npz --detect-every 3
    PYTHONPATH=<new tree> python bench/extract_resolution.py --dump-crops v.mp4 new.npz --detect-every 3
    python bench/extract_resolution.py --compare-crops old.npz new.npz
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_video(path: Path, width: int, height: int, frames: int, fps: float) -> Path:
    """A face moving over a smooth background (synthetic.media), written in chunks so the writer stays small."""
    import av
    import numpy as np

    from affcli.synthetic.media import render_faces, smooth_background

    if path.is_file():
        return path
    tmp = path.with_suffix(".part.mp4")
    rng = np.random.default_rng(0)
    background = smooth_background(rng, width, height)
    side = int(min(width, height) * 0.5)
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=int(fps), options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for start in range(0, frames, 8):
            n = min(8, frames - start)
            t = (start + np.arange(n)) / fps
            centres = np.stack([width / 2 + 0.1 * width * np.sin(2 * np.pi * t / 3),
                                height / 2 + 0.05 * height * np.cos(2 * np.pi * t / 2)], 1)
            ones = np.ones(n, np.float32)
            batch = render_faces(background, centres, ones * side, np.ones((n, 3), np.float32), ones, ones > 0)
            for img in batch:
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)
    return path


def run_extract(video_dir: Path, cache: Path, args: argparse.Namespace) -> dict:
    """`affcli extract` in a child process; its wall time, exit code and peak RSS (MiB)."""
    cmd = [sys.executable, "-m", "affcli", "extract", "--cache", str(cache), "--video-dir", str(video_dir),
           "-b", args.backbone, "--face", args.face, "--device", "cpu", "--batch-size", str(args.batch)]
    if args.decode_memory_mb:
        cmd += ["--decode-memory-mb", str(args.decode_memory_mb)]
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the max over all children
        seconds = time.perf_counter() - t0
        err.seek(0)
        lines = [ln for ln in err.read().splitlines() if ln.strip() and not ln.startswith(("frames ", "videos "))]
    return {"exit_code": os.waitstatus_to_exitcode(status), "seconds": round(seconds, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024), "last_line": (lines or [""])[-1][-300:]}


def decode_only(video: Path, budget_mb: int, workers: int = 2) -> None:
    """Decode `video` as extract's decoders do (batches of one batch's share of the budget) and print this process's
    peak RSS: what the codec itself holds beside the budget (its reference frames), without models."""
    import resource

    from affcli.pipeline.config import ExtractConfig
    from affcli.pipeline.media import iter_video_frames

    per_batch = ExtractConfig(cache="-", backbones=["clip:tiny"], decode_memory_mb=budget_mb,
                              decode_workers=workers).batch_bytes()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, n, largest = time.perf_counter(), 0, 0
    for frames, _ in iter_video_frames(video, batch_size=64, max_bytes=per_batch):
        n, largest = n + len(frames), max(largest, frames.nbytes)
    print(json.dumps({"decoded_frames": n, "batch_budget_mib": round(per_batch / 2**20, 1),
                      "largest_batch_mib": round(largest / 2**20, 1), "seconds": round(time.perf_counter() - t0, 1),
                      "rss_before_mib": round(base / 1024),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def run_decode_only(video: Path, args: argparse.Namespace) -> dict:
    """decode_only in a fresh child process; its JSON line."""
    out = subprocess.run([sys.executable, __file__, "--decode-only", str(video), str(args.decode_memory_mb or 1024)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def dump_crops(video: Path, out: Path, face: str, every: int) -> None:
    """Decode `video` and run the face stage as `extract` does (default budget, CPU); save crops, validity and faces."""
    import queue
    import threading

    import numpy as np
    import torch

    from affcli.pipeline.config import ExtractConfig
    from affcli.pipeline.crop_settings import CropSettings
    from affcli.pipeline.sources import Source
    from affcli.pipeline.stages import Decoder, FaceStage, FrameBatch

    per_batch = ExtractConfig(cache="-", backbones=["clip:tiny"]).batch_bytes()
    crop = CropSettings(input="video", size=112 if face == "mtcnn" else 224, detector=face, detect_every=every)
    stage = FaceStage(crop, crop.build_detector("cpu"), max_bytes=per_batch)
    q: queue.Queue = queue.Queue(maxsize=4)
    decoder = Decoder(torch.device("cpu"), 64, crop.size, 25.0, lambda s: None, max_bytes=per_batch)
    threading.Thread(target=decoder.run, args=(Source(video.stem, video, "video"), False, q, threading.Event()),
                     daemon=True).start()
    got: dict[str, list] = {}
    done = False
    while not done:
        msg = q.get()
        done = not isinstance(msg, FrameBatch)
        for m in stage(msg):
            if isinstance(m, FrameBatch):
                got.setdefault("crops", []).append(m.crops.numpy())
                got.setdefault("valid", []).append(m.valid)
                for k, v in (m.faces or {}).items():
                    got.setdefault(k, []).append(v)
            else:
                got.setdefault("end", []).append(np.array([type(m).__name__]))
    np.savez_compressed(out, **{k: np.concatenate(v) for k, v in got.items()})


def compare_crops(a: Path, b: Path) -> None:
    """Print, per array of two --dump-crops files, whether it is bit-identical (NaN equal to NaN) and the max diff."""
    import numpy as np

    x, y = np.load(a), np.load(b)
    rows = {}
    for k in sorted(set(x.files) | set(y.files)):
        if k not in x.files or k not in y.files or x[k].shape != y[k].shape:
            rows[k] = "missing or other shape"
            continue
        u, v = x[k], y[k]
        same = bool(np.array_equal(u, v, equal_nan=u.dtype.kind == "f"))
        diff = float(np.nanmax(np.abs(u.astype(np.float64) - v))) if u.dtype.kind in "fiu" and u.size else 0.0
        rows[k] = {"shape": list(u.shape), "identical": same, "max_abs_diff": diff}
    print(json.dumps(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["3840x2160"], help="WIDTHxHEIGHT, one run each")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--face", default="mtcnn")
    ap.add_argument("--backbone", default="clip:tiny")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--decode-memory-mb", type=int, default=0, help="0: the extract default")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "affcli_bench_resolution")
    ap.add_argument("--decode-only", action="store_true",
                    help="only decode each video (no models, no cache) and report that process's peak RSS")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        w, h = (int(x) for x in size.lower().split("x"))
        vdir = args.work / f"{w}x{h}_{args.frames}"
        vdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--make-video", str(vdir / f"v{w}x{h}.mp4"), str(w), str(h),
                        str(args.frames), str(args.fps)], check=True)
        made = time.perf_counter() - t0
        if args.decode_only:
            res = {"decode_only": True, **run_decode_only(vdir / f"v{w}x{h}.mp4", args)}
        else:
            with tempfile.TemporaryDirectory(dir=args.work) as tmp:
                res = run_extract(vdir, Path(tmp) / "cache.zarr", args)
        row = {"size": f"{w}x{h}", "frames": args.frames, "face": args.face, "backbone": args.backbone,
               "decode_memory_mb": args.decode_memory_mb or "default", "video_written_s": round(made, 1), **res}
        rows.append(row)
        print(json.dumps(row), flush=True)
    info = {"machine": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg(), "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-video"]:
        make_video(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
    elif sys.argv[1:2] == ["--decode-only"] and len(sys.argv) == 4 and sys.argv[3].isdigit():
        decode_only(Path(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--dump-crops"]:
        opt = argparse.ArgumentParser()
        opt.add_argument("video", type=Path)
        opt.add_argument("out", type=Path)
        opt.add_argument("--face", default="mtcnn")
        opt.add_argument("--detect-every", type=int, default=1)
        o = opt.parse_args(sys.argv[2:])
        dump_crops(o.video, o.out, o.face, o.detect_every)
    elif sys.argv[1:2] == ["--compare-crops"]:
        compare_crops(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
