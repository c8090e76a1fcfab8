"""The ready GPU check: every CUDA path of affcli in one script, in under 8 minutes on one GPU, one JSON plus a markdown
table for bench/RESULTS.md. Run it first whenever a machine with a GPU is lent:

    python bench/gpu_check.py --out bench/results/gpu_check.json            # on the GPU machine
    python bench/gpu_check.py --dry-run --out /tmp/gpu_check_dry.json      # on CPU, tiny sizes (CI runs this)

Steps (each in its own process with its own time limit, so one failure or hang costs only its step; the limits add
up to under 8 minutes):
  decode      PyAV decode + copy vs NVDEC (torchcodec) on the device; JPEG decode on the host vs torchvision's
              batched `decode_jpeg(device="cuda")`
  faces       bench/extract.py: MTCNN on the device (detect/track), the 5-point alignment warp (crop), the staged
              extract end to end with clip:ViT-B-16/random, MTCNN and no-face rows
  kinds       bench/extract.py --per-kind --kinds large: ViT-B-16, DINOv2-L/14, WavLM-Large (random weights, loaded
              back through the real from_pretrained code), bare and end-to-end frames/s each
  gpus        `affcli extract --gpus all` (one Dask worker per GPU) on the same videos
  heads       bench/heads.py --scale 1: cached-feature head epoch on an Aff-Wild2-sized table vs a backbone in the loop
  grid        `affcli ablate` of a 100-run grid (5 fusions x 4 temporal heads x 5 seeds) with --jobs 4 on the GPU
  pointcloud  `affcli pc` training for 2 minutes (procedural shapes), then x4 / x16 upsampling of a 2048-point cloud
  stream      bench/stream.py: per-frame latency of `affcli stream` with clip:ViT-B-16/random and MTCNN
--dry-run runs the same steps on the CPU with tiny twins and a few frames (--gpus is then checked to refuse a machine
without CUDA in one line), so the script cannot rot unnoticed.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
BUDGET_S = 470.0


def _affcli(args: list[str], dry: bool) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of an `affcli` command: a child process on the GPU machine, in-process on the
    dry run (no second interpreter start-up)."""
    if not dry:
        r = subprocess.run([sys.executable, "-m", "affcli", *args], capture_output=True, text=True)
        return r.returncode, r.stdout, r.stderr
    from typer.testing import CliRunner

    from affcli.cli import app

    r = CliRunner().invoke(app, args)
    return r.exit_code, r.stdout, r.stderr


# ---- steps that run here (each is called in a child process: `gpu_check.py --step NAME`) -----------------------------

def _videos(work: Path, dry: bool) -> Path:
    from affcli.synthetic.media import make_demo_dataset

    if (work / "data" / "videos").is_dir():
        return work / "data" / "videos"
    ds = make_demo_dataset(work / "data", n_videos=1 if dry else 4, seconds=0.4 if dry else 10.0,
                           size=(96, 64) if dry else (640, 360), seed=0)
    return Path(ds.video_dir)


def step_decode(work: Path, dry: bool, device: str) -> dict[str, Any]:
    """Decoded frames/s: PyAV + copy, NVDEC (torchcodec), host JPEG decode, batched device `decode_jpeg`."""
    import warnings

    import cv2
    import numpy as np
    import torch

    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")
    from torchvision.io import decode_jpeg

    from affcli.pipeline.media import iter_video_frames
    from affcli.pipeline.stages import nvdec_available, to_device

    dev = torch.device(device)
    paths = sorted(_videos(work, dry).iterdir())
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    frames = [to_device(f, dev) for p in paths for f, _ in iter_video_frames(p, 64)]
    sync()
    n = sum(len(f) for f in frames)
    out["pyav_fps"] = round(n / (time.perf_counter() - t0), 1)
    if nvdec_available(dev):
        from affcli.pipeline.stages import _cuda_video_frames

        t0 = time.perf_counter()
        m = sum(len(f) for p in paths for f, _ in _cuda_video_frames(p, 64, dev))
        sync()
        out["nvdec_fps"] = round(m / (time.perf_counter() - t0), 1)
    else:
        out["nvdec_fps"] = "unavailable (no CUDA device or torchcodec)"
    host = np.concatenate([f.permute(0, 2, 3, 1).cpu().numpy() for f in frames])[: 64 if dry else 2048]
    jpgs = [torch.frombuffer(bytearray(cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes()),
                             dtype=torch.uint8) for f in host]
    t0 = time.perf_counter()
    for j in jpgs:
        decode_jpeg(j)
    out["jpeg_host_fps"] = round(len(jpgs) / (time.perf_counter() - t0), 1)
    decode_jpeg(jpgs[:8], device=dev)
    sync()
    t0 = time.perf_counter()
    for i in range(0, len(jpgs), 256):
        decode_jpeg(jpgs[i:i + 256], device=dev)
    sync()
    out["jpeg_device_fps"] = round(len(jpgs) / (time.perf_counter() - t0), 1)
    out["frames"] = n
    return out


def step_gpus(work: Path, dry: bool, device: str) -> dict[str, Any]:
    """`affcli extract --gpus all` end to end (on CPU: the one-line refusal is the check)."""
    vids = _videos(work, dry)
    args = ["extract", "--cache", str(work / "gpus.zarr"), "--video-dir", str(vids),
            "-b", "clip:tiny" if dry else "clip:ViT-B-16/random", "--gpus", "all", "--prompts", "expr8"]
    t0 = time.perf_counter()
    code, _, err = _affcli(args, dry)
    dt = time.perf_counter() - t0
    if dry:
        lines = err.strip().splitlines()
        if not (code == 2 and len(lines) == 1 and "no CUDA device" in lines[0]):
            raise RuntimeError(f"--gpus on a CPU machine: exit {code}, stderr {err[-400:]!r}")
        return {"refused_on_cpu": lines[0][:160]}
    if code != 0:
        raise RuntimeError(f"extract --gpus all: exit {code}: {err[-600:]}")
    from affcli.cache.store import FeatureStore

    st = FeatureStore(work / "gpus.zarr", mode="r")
    spec = st.feature_sets()[0]
    frames = sum(len(st.read_video(spec, v).valid) for v in st.videos(spec))
    import torch

    return {"gpus": torch.cuda.device_count(), "frames": frames, "e2e_fps": round(frames / dt, 1),
            "wall_s": round(dt, 1)}


def step_grid(work: Path, dry: bool, device: str) -> dict[str, Any]:
    """`affcli ablate` of a 100-run grid on a synthetic cache (4 runs on the dry run); runs/hour."""
    from affcli.synthetic.features import make_synthetic

    cache, labels = make_synthetic(work / "grid", n_videos=6 if dry else 60, n_frames=90 if dry else 1500,
                                   dims=(16, 12) if dry else (512, 768))
    fusions = ["none:visual", "concat"] if dry else ["none:visual", "none:audio", "concat", "xattn", "xattn-gated"]
    temporal = ["mlp"] if dry else ["mlp", "tcn", "gru", "transformer"]
    seeds = [0, 1] if dry else [0, 1, 2, 3, 4]
    grid = work / "grid.toml"
    grid.write_text("[base]\ntask = \"expr\"\nepochs = {e}\nd_model = {d}\nwindow = 32\nstride = 16\nplots = false\n"
                    "save_predictions = false\n\n[axes]\nfusion = {f}\ntemporal = {t}\nseeds = {s}\n".format(
                        e=1 if dry else 3, d=16 if dry else 128, f=json.dumps(fusions), t=json.dumps(temporal),
                        s=json.dumps(seeds)))
    args = ["ablate", str(grid), "--cache", str(cache), "--labels", str(labels), "--out", str(work / "ablation"),
            "--jobs", "1" if dry else "4", "--device", device]
    t0 = time.perf_counter()
    code, out, err = _affcli(args, dry)
    dt = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"ablate: exit {code}: {(err or out)[-600:]}")
    runs = len(fusions) * len(temporal) * len(seeds)
    done = sum(1 for p in (work / "ablation" / "runs").iterdir() if (p / "metrics.json").is_file())
    return {"runs": runs, "finished": done, "wall_s": round(dt, 1), "runs_per_hour": round(3600 * done / dt)}


def step_pointcloud(work: Path, dry: bool, device: str) -> dict[str, Any]:
    """PU-MFA training for 2 minutes on procedural shapes, then x4 and x16 of a 2048-point cloud."""
    import numpy as np
    import torch

    from affcli.pointcloud.config import TrainConfig
    from affcli.pointcloud.data import make_pugan_h5
    from affcli.pointcloud.train import train
    from affcli.pointcloud.upsample import default_batch, load_upsampler, upsample_cloud

    h5 = make_pugan_h5(None, work / "pc.h5", patches_per_mesh=2 if dry else 50, procedural=1 if dry else 40)
    cfg = TrainConfig(data=str(h5), out=str(work / "pc_run"), epochs=1 if dry else 1000, batch_size=8 if dry else 64,
                      device=device, max_minutes=None if dry else 2.0, max_steps=2 if dry else None)
    t0 = time.perf_counter()
    m = train(cfg)
    train_s = time.perf_counter() - t0
    model = load_upsampler(work / "pc_run", device)
    xyz = np.random.default_rng(0).normal(size=(64 if dry else 2048, 3)).astype(np.float32)
    loss = m.get("final_loss")
    out: dict[str, Any] = {"train_s": round(train_s, 1), "steps": m.get("steps_done"), "epochs": m.get("epochs_done"),
                           "final_loss": None if loss is None else round(float(loss), 5)}
    for ratio in (4,) if dry else (4, 16):
        upsample_cloud(model, xyz, ratio, default_batch(device))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        up = upsample_cloud(model, xyz, ratio, default_batch(device))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out[f"x{ratio}_s"] = round(time.perf_counter() - t0, 3)
        assert up.shape == (ratio * len(xyz), 3)
    return out


INLINE: dict[str, Callable[[Path, bool, str], dict[str, Any]]] = {
    "decode": step_decode, "gpus": step_gpus, "grid": step_grid, "pointcloud": step_pointcloud}


# ---- steps that are bench scripts -------------------------------------------------------------------------------------

def script_args(name: str, dry: bool, device: str, out: Path) -> list[str]:
    """argv of the bench script behind a step (GPU sizes, or tiny ones for the dry run)."""
    if name == "faces":
        size = ["--videos", "1", "--seconds", "0.4", "--width", "160", "--height", "120", "--batch", "8",
                "--backbone", "clip:tiny", "--workers", "1"] if dry else \
            ["--videos", "4", "--seconds", "10", "--width", "640", "--height", "360", "--batch", "512", "--workers",
             "4", "--backbone", "clip:ViT-B-16/random"]
        return [str(BENCH / "extract.py"), "--device", device, "--faces", "mtcnn,none", *size, "--out", str(out)]
    if name == "kinds":
        size = ["--videos", "1", "--seconds", "0.4", "--width", "96", "--height", "64", "--batch", "8",
                "--backbone", "dinov2:tiny", "--backbone", "wavlm:tiny", "--workers", "1"] if dry else \
            ["--kinds", "large", "--videos", "2", "--seconds", "10", "--batch", "256", "--workers", "4"]
        return [str(BENCH / "extract.py"), "--per-kind", "--device", device, *size, "--out", str(out)]
    if name == "heads":
        size = ["--scale", "0.0005", "--max-steps", "2", "--backbone-steps", "1", "--backbone", "clip:tiny",
                "--window", "8", "--stride", "8", "--batch-size", "8", "--backbone-batch", "2", "--video-frames",
                "200", "--threads", "1"] if dry \
            else ["--scale", "1", "--batch-size", "1024", "--backbone", "clip:ViT-B-16/random"]
        return [str(BENCH / "heads.py"), "--device", device, *size, "--out", str(out)]
    if name == "stream":
        size = ["--backbone", "clip:tiny", "--face", "none", "--frames", "4", "--size", "96x64", "--window", "4",
                "--temporal", "gru(hidden=16)"] if dry else \
            ["--backbone", "clip:ViT-B-16/random", "--face", "mtcnn", "--frames", "600"]
        return [str(BENCH / "stream.py"), "--device", device, *size, "--out", str(out)]
    raise KeyError(name)


STEPS = [("decode", 25), ("faces", 60), ("kinds", 60), ("gpus", 45), ("heads", 45), ("grid", 70), ("pointcloud", 135),
         ("stream", 30)]
WHAT = {"decode": "PyAV vs NVDEC; host vs device decode_jpeg", "faces": "MTCNN + alignment + staged extract",
        "kinds": "ViT-B-16 / DINOv2-L / WavLM-L per kind", "gpus": "extract --gpus all",
        "heads": "cached head epoch vs backbone in the loop", "grid": "ablate grid, --jobs 4",
        "pointcloud": "pc train 2 min + x4/x16 upsample", "stream": "stream latency"}


def summary(name: str, res: dict[str, Any]) -> str:
    """The figures of a step's JSON worth a table cell."""
    if name in ("faces", "kinds"):
        rows = res.get("rows", [])
        if name == "kinds":
            return "; ".join(f"{Path(r['spec']).name if '/' in r['spec'] else r['spec']}: bare {r['bare_fps']}, "
                             f"e2e {r['e2e_fps']} f/s" for r in rows)
        return "; ".join(f"{r['input']}/{r['face']}: detect {r.get('detect_fps')}, crop {r.get('crop_fps')}, "
                         f"e2e {r['e2e_fps']} f/s" for r in rows)
    if name == "heads":
        flat = {k: v for k, v in res.items() if isinstance(v, (int, float, str))}
        flat.update({k: v for part in res.values() if isinstance(part, dict) for k, v in part.items()
                     if isinstance(v, (int, float))})
        keep = [k for k in flat if any(w in k for w in ("windows_per_s", "epoch", "speed"))]
        return ", ".join(f"{k} {round(flat[k], 2) if isinstance(flat[k], float) else flat[k]}"
                         for k in keep[:6]) or json.dumps(res)[:200]
    if name == "stream":
        lat = res.get("latency") or {}
        return (f"p50 {lat.get('p50_ms', 0):.1f} ms, p99 {lat.get('p99_ms', 0):.1f} ms, "
                f"{res.get('fps_end_to_end', 0):.1f} frames/s end to end" if lat else json.dumps(res)[:200])
    return ", ".join(f"{k} {v}" for k, v in res.items())


def run_inline(name: str, dry: bool, device: str, work: Path) -> dict[str, Any]:
    """One step in this process (the dry run: no interpreter start-ups): {status, seconds, result | error}."""
    import runpy
    import traceback

    out = work / f"{name}.json"
    t0 = time.perf_counter()
    argv = sys.argv
    try:
        if name in INLINE:
            out.write_text(json.dumps(INLINE[name](work, dry, device), default=str))
        else:
            args = script_args(name, dry, device, out)
            sys.argv = args
            runpy.run_path(args[0], run_name="__main__")
        return {"status": "ok", "seconds": round(time.perf_counter() - t0, 1), "result": json.loads(out.read_text())}
    except BaseException as e:  # noqa: BLE001 - a step that fails (or exits) is reported, the others go on
        tail = traceback.format_exception_only(type(e), e)[-1].strip()
        return {"status": "failed", "seconds": round(time.perf_counter() - t0, 1), "error": tail[-600:]}
    finally:
        sys.argv = argv


def run_step(name: str, dry: bool, device: str, work: Path, limit: float) -> dict[str, Any]:
    """One step in a child process under `limit` seconds: {status, seconds, result | error}."""
    work.mkdir(parents=True, exist_ok=True)
    if dry:
        return run_inline(name, dry, device, work)
    out = work / f"{name}.json"
    if name in INLINE:
        cmd = [sys.executable, __file__, "--step", name, "--work", str(work), "--device", device, "--out", str(out)] + \
            (["--dry-run"] if dry else [])
    else:
        cmd = [sys.executable, *script_args(name, dry, device, out)]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": round(time.perf_counter() - t0, 1), "limit_s": limit}
    dt = round(time.perf_counter() - t0, 1)
    if r.returncode != 0 or not out.is_file():
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        return {"status": "failed", "seconds": dt, "error": " | ".join(tail)[-600:]}
    return {"status": "ok", "seconds": dt, "result": json.loads(out.read_text())}


def table(report: dict[str, Any]) -> str:
    """Markdown for bench/RESULTS.md."""
    m = report["meta"]
    lines = [f"GPU check on {m['device']} ({'dry run, ' if m['dry_run'] else ''}torch {m['torch']}, "
             f"{m['total_s']:.0f} s in all)", "", "| step | what | figures | s | status |", "|---|---|---|---:|---|"]
    for name, r in report["steps"].items():
        fig = summary(name, r["result"]) if r["status"] == "ok" else r.get("error", f"limit {r.get('limit_s')} s")
        lines.append(f"| {name} | {WHAT[name]} | {fig.replace('|', '/')} | {r['seconds']} | {r['status']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="Every step on the CPU with tiny sizes (CI).")
    ap.add_argument("--device", default=None, help="cuda (default) or cpu (--dry-run's default).")
    ap.add_argument("--only", default=None, help="Comma list of steps to run (default: all).")
    ap.add_argument("--work", type=Path, default=None, help="Working folder (default: a temporary one).")
    ap.add_argument("--out", type=Path, default=Path("bench/results/gpu_check.json"))
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    device = a.device or ("cpu" if a.dry_run else "cuda")
    if a.step:
        a.work.mkdir(parents=True, exist_ok=True)
        res = INLINE[a.step](a.work, a.dry_run, device)
        a.out.write_text(json.dumps(res, indent=1, default=str))
        return 0
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it where a GPU is lent, or use --dry-run", file=sys.stderr)
        return 2
    names = [n for n, _ in STEPS]
    chosen = names if not a.only else [n.strip() for n in a.only.split(",")]
    bad = [n for n in chosen if n not in names]
    if bad:
        print(f"gpu_check: unknown step {bad[0]!r}; steps: {', '.join(names)}", file=sys.stderr)
        return 2
    if a.dry_run:
        torch.set_num_threads(1)  # tiny steps on a shared CPU: one thread is far faster than contended OpenMP ones
    work = a.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    env_note = os.environ.get("OMP_NUM_THREADS")
    t0 = time.perf_counter()
    steps: dict[str, Any] = {}
    for name, limit in STEPS:
        if name not in chosen:
            continue
        left = BUDGET_S - (time.perf_counter() - t0)
        if not a.dry_run and left < 10:
            steps[name] = {"status": "skipped", "seconds": 0, "error": "the 8-minute budget is spent"}
            continue
        steps[name] = run_step(name, a.dry_run, device, work / name, limit if a.dry_run else min(limit, left))
        print(f"{name:11s} {steps[name]['status']:8s} {steps[name]['seconds']:7.1f} s", flush=True)
    meta = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu",
            "dry_run": a.dry_run, "torch": torch.__version__, "python": platform.python_version(),
            "omp_num_threads": env_note, "total_s": round(time.perf_counter() - t0, 1), "budget_s": BUDGET_S}
    report = {"meta": meta, "steps": steps}
    report["table"] = table(report)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1, default=str))
    print("\n" + report["table"])
    return 0 if all(s["status"] == "ok" for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
