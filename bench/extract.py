"""Benchmark of stage 1: bare backbone frames/s vs end-to-end `extract` frames/s on the same synthetic videos.

(a) bare: the backbone alone on pre-decoded, pre-cropped tensors (visual) or pre-decoded audio (audio);
(b) end-to-end: `Extractor.run` from video files to a fresh cache (decode, faces, backbone, writes).
The ratio (b)/(a) says how well decoding and writing hide behind compute (goal on a GPU: >= 0.9).

    python bench/extract.py --backbone clip:tiny --backbone wav2vec2:tiny --videos 4 --seconds 6
    python bench/extract.py --device cuda --backbone clip:ViT-B-16/random --videos 8 --seconds 20 --width 640 --height 360
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


from affcli.pipeline.backbones import build_backbone  # noqa: E402
from affcli.synthetic.media import make_demo_dataset  # noqa: E402
from affcli.common.device import resolve_device  # noqa: E402
from affcli.pipeline.extract import ExtractConfig, Extractor, _resize_batch  # noqa: E402
from affcli.pipeline.faces import FaceCropper  # noqa: E402
from affcli.pipeline.media import iter_video_frames, read_audio  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bare_visual(spec: str, crops: np.ndarray, dev: torch.device, batch: int, repeats: int) -> float:
    """Frames/s of preprocess + embed on crops already in memory."""
    b = build_backbone(spec, dev)
    x = _resize_batch(crops, b.input_size)
    b.embed(b.preprocess(x[:batch]))
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        for i in range(0, len(x), batch):
            b.embed(b.preprocess(x[i:i + batch]))
    _sync(dev)
    return repeats * len(x) / (time.perf_counter() - t0)


def bare_audio(spec: str, wavs: list[tuple[np.ndarray, np.ndarray]], dev: torch.device, align: str) -> float:
    """Video frames/s covered by embed_audio on pre-decoded audio."""
    b = build_backbone(spec, dev)
    b.embed_audio(wavs[0][0], wavs[0][1], align)
    _sync(dev)
    t0 = time.perf_counter()
    n = 0
    for wav, ts in wavs:
        b.embed_audio(wav, ts, align)
        n += len(ts)
    _sync(dev)
    return n / (time.perf_counter() - t0)


def base_audio_folders(root: Path) -> list[str]:
    """Random-weight base-size Wav2Vec2 and AST saved as local folders (the real `from_pretrained` path)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    w, a = root / "wav2vec2-base-random", root / "ast-base-random"
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(w)
    Wav2Vec2FeatureExtractor().save_pretrained(w)
    ASTModel(ASTConfig()).save_pretrained(a)
    ASTFeatureExtractor().save_pretrained(a)
    return [f"wav2vec2:{w}", f"ast:{a}"]


def end_to_end(spec: str, video_dir: Path, dev: torch.device, batch: int, workers: int,
               detect_every: int = 1) -> tuple[float, int]:
    """Frames/s of a full extract run into a fresh cache; returns (frames/s, frames)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        ex = Extractor(ExtractConfig(cache=tmp / "c.zarr", backbones=[spec], video_dir=video_dir, device=str(dev),
                                     batch_size=batch, decode_workers=workers, prompt_sets=(),
                                     detect_every=detect_every))
        _sync(dev)
        t0 = time.perf_counter()
        res = ex.run()
        _sync(dev)
        dt = time.perf_counter() - t0
        frames = sum(r.n_frames for r in res if r.status == "ok")
        return frames / dt, frames
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", action="append", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--align", default="centered")
    ap.add_argument("--detect-every", type=int, default=1)
    ap.add_argument("--base-audio", action="store_true",
                    help="Also bench base-size Wav2Vec2 and AST (random weights saved to local folders, "
                         "loaded back through from_pretrained).")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    specs = a.backbone or ["clip:tiny", "wav2vec2:tiny", "ast:tiny"]
    dev = resolve_device(a.device)
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    if a.base_audio:
        specs += base_audio_folders(work / "models")
    ds = make_demo_dataset(work, n_videos=a.videos, seconds=a.seconds, fps=a.fps, size=(a.width, a.height), seed=0)
    paths = sorted(Path(ds.video_dir).iterdir())
    rows = []
    for spec in specs:
        b = build_backbone(spec, dev)
        if b.modality == "visual":
            cropper = FaceCropper(size=b.input_size, detect_every=a.detect_every)
            crops = np.concatenate([cropper.crop_batch(f)[0] for p in paths for f, _ in iter_video_frames(p, 64)])
            bare = bare_visual(spec, crops, dev, a.batch, a.repeats)
        else:
            wavs = [(read_audio(p), np.concatenate([t for _, t in iter_video_frames(p, 64)])) for p in paths]
            bare = bare_audio(spec, wavs, dev, a.align)
        del b
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        e2e, frames = end_to_end(spec, ds.video_dir, dev, a.batch, a.workers, a.detect_every)
        peak_gpu = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
        row = {"backbone": spec, "bare_fps": round(bare, 1), "e2e_fps": round(e2e, 1), "ratio": round(e2e / bare, 3),
               "frames": frames, "peak_gpu_mib": None if peak_gpu is None else round(peak_gpu, 1),
               "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
            "cpus": __import__("os").cpu_count(), "torch": torch.__version__, "videos": a.videos,
            "seconds": a.seconds, "size": [a.width, a.height], "fps": a.fps, "batch": a.batch, "workers": a.workers,
            "detect_every": a.detect_every}
    print(f"\n{'backbone':28s} {'bare f/s':>10s} {'e2e f/s':>10s} {'ratio':>6s} {'peak GPU MiB':>12s} {'peak RSS MiB':>12s}")
    for r in rows:
        print(f"{r['backbone']:28s} {r['bare_fps']:10.1f} {r['e2e_fps']:10.1f} {r['ratio']:6.2f} "
              f"{str(r['peak_gpu_mib']):>12s} {r['peak_rss_mib']:12.1f}")
    print(json.dumps(meta))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
