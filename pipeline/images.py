"""Still-image datasets (LSD's class folders, any tree of jpg/png) as a source: one "video" per folder, one row per
image, each row's relative path kept; optionally K seeded augmented views per image (random resized crop,
horizontal flip, colour jitter from torchvision.transforms.v2) embedded by the same frozen backbones.

Images have no time: row i gets timestamp i (fps 1). Faces are off by default (LSD-style images are face crops
already); `image_faces` runs the face cropper per image. Views enter the feature set's fingerprint.
"""
from __future__ import annotations

import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affcli.cache.rows import row_extras
from affcli.cache.store import FeatureStore
from affcli.common.device import resolve_device
from affcli.pipeline.backbones import build_backbone
from affcli.pipeline.faces import FaceCropper, whole_frames
from affcli.pipeline.frames import _read
from affcli.pipeline.prompts import PROMPT_SETS

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
IMAGE_FPS = 1.0
CROP_SCALE = (0.5, 1.0)
FLIP_P = 0.5
JITTER = (0.4, 0.4, 0.4, 0.1)


def image_paths(folder: Path) -> list[Path]:
    """The jpg/png files directly in `folder`, sorted by name (subfolders are their own videos)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not p.name.startswith("."))


def image_folders(root: Path) -> list[Path]:
    """`root` and every folder below it (hidden ones skipped) that directly holds at least one image."""
    root = Path(root)
    cands = [root, *(p for p in root.rglob("*") if p.is_dir()
                     and not any(part.startswith(".") for part in p.relative_to(root).parts))]
    return sorted(p for p in cands if image_paths(p))


def check_image_config(cfg: Any) -> None:
    """Refuse --images-dir mixed with video/frame folders, and --views without --augment (or the reverse)."""
    if cfg.video_dir is not None or cfg.frames_dir is not None:
        raise ValueError("extract: --images-dir takes no --video-dir or --frames-dir (still images have no audio)")
    if cfg.views < 0:
        raise ValueError(f"extract: --views must be >= 0, not {cfg.views}")
    if bool(cfg.views) != bool(cfg.augment):
        raise ValueError("extract: --views K and --augment go together (K augmented views per image)")


class ViewAugment:
    """K augmented views of square uint8 crops, seeded per (seed, video, image, view) so reruns and resumes agree."""

    def __init__(self, size: int, views: int, seed: int = 0):
        from torchvision.transforms import v2

        self.size, self.views, self.seed = int(size), int(views), int(seed)
        self.tf = v2.Compose([v2.RandomResizedCrop(self.size, scale=CROP_SCALE, antialias=True),
                              v2.RandomHorizontalFlip(FLIP_P), v2.ColorJitter(*JITTER)])

    def fingerprint(self) -> dict[str, Any]:
        """What decides the views' pixels (enters the feature set's fingerprint)."""
        return {"views": self.views, "crop_scale": list(CROP_SCALE), "flip": FLIP_P, "jitter": list(JITTER),
                "seed": self.seed, "library": "torchvision.transforms.v2"}

    def __call__(self, crops: np.ndarray, video_id: str, first: int) -> np.ndarray:
        """uint8 [B,S,S,3] crops of rows first..first+B-1 -> uint8 [K,B,S,S,3] views."""
        out = np.zeros((self.views, *crops.shape), np.uint8)
        x = torch.from_numpy(crops).permute(0, 3, 1, 2)
        with torch.random.fork_rng(devices=[]):
            for i in range(len(crops)):  # each image draws its own crop/flip/jitter parameters
                for k in range(self.views):
                    torch.manual_seed(zlib.crc32(f"{self.seed}/{video_id}/{first + i}/{k}".encode()))
                    out[k, i] = self.tf(x[i]).permute(1, 2, 0).numpy()
        return out


def iter_image_folder(folder: Path, batch_size: int = 64, threads: int = 4) -> Iterator[tuple[list, np.ndarray, np.ndarray]]:
    """Yield (RGB images as a list of uint8 [H,W,3] arrays or None, timestamps [B] = row index, ok [B]) per batch.

    Unreadable images are None with ok=False and a warning naming the file (the row stays, as zeros)."""
    files = image_paths(folder)
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="img") as pool:
        for start in range(0, len(files), batch_size):
            decoded = list(pool.map(_read, files[start:start + batch_size]))
            for img, bad in decoded:
                if bad is not None:
                    warnings.warn(f"{bad}: unreadable image, stored as zeros with ok=False", stacklevel=2)
            imgs = [img for img, _ in decoded]
            yield imgs, np.arange(start, start + len(imgs), dtype=np.float64) / IMAGE_FPS, \
                np.array([i is not None for i in imgs], bool)


class ImageExtractor:
    """Image folders x visual backbones -> cache rows (+ paths, + views), resumable, per-folder error isolation."""

    def __init__(self, cfg: Any, progress: Callable[[str, dict], None] | None = None):
        self.cfg = cfg
        self.progress = progress or (lambda event, info: None)
        self.store = FeatureStore(cfg.cache, mode="a")
        device = resolve_device(cfg.device)
        self.backbones = [build_backbone(s, device, seed=cfg.seed) for s in cfg.backbones]
        audio = [b.spec for b in self.backbones if b.modality != "visual"]
        if audio:
            raise ValueError(f"extract --images-dir: {', '.join(audio)} need audio; still images take visual backbones only")
        self.size = max(b.input_size for b in self.backbones)
        self.cropper = FaceCropper(size=self.size, margin=cfg.face_margin, threads=1) if cfg.image_faces else None
        self.augment = ViewAugment(self.size, cfg.views, cfg.seed) if cfg.views > 0 else None

    def crop_fingerprint(self) -> dict[str, Any]:
        """How rows were cut from the images, and the augmented views (part of every feature set's fingerprint)."""
        crop = {"mode": "face", **self.cropper.fingerprint()} if self.cropper else {"mode": "whole-image", "size": self.size}
        return {**crop, "augment": self.augment.fingerprint() if self.augment else None}

    def _crops(self, imgs: list, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crops = np.zeros((len(imgs), self.size, self.size, 3), np.uint8)
        ok = ok.copy()
        for i, img in enumerate(imgs):  # images differ in size: one resize (or face detection) per image
            if img is None:
                continue
            if self.cropper is None:
                crops[i] = whole_frames(img[None], self.size)[0]
            else:
                c, v, _ = self.cropper.crop_batch(img[None])
                crops[i], ok[i] = c[0], bool(v[0])
        return crops, ok

    def _embed(self, b: Any, crops: np.ndarray) -> np.ndarray:
        from affcli.pipeline.extract import _resize_batch

        return b.embed(b.preprocess(_resize_batch(crops, b.input_size))).float().cpu().numpy()

    def extract_folder(self, src: Any, specs: list[str]) -> int:
        """Embed every image of one folder (and its views) with the backbones of `specs`, write them; returns rows."""
        c = self.cfg
        todo = [b for b in self.backbones if b.spec in specs]
        feats: dict[str, list] = {b.spec: [] for b in todo}
        views: dict[str, list] = {b.spec: [] for b in todo}
        oks, tss = [], []
        for imgs, ts, ok in iter_image_folder(src.path, c.decode_batch, max(1, c.decode_workers)):
            crops, ok = self._crops(imgs, ok)
            batch = crops
            if self.augment is not None:
                vs = self.augment(crops, src.video_id, int(ts[0] * IMAGE_FPS))
                batch = np.concatenate([crops, vs.reshape(-1, *crops.shape[1:])])
            for b in todo:
                e = self._embed(b, batch)
                e[:len(crops)][~ok] = 0.0
                feats[b.spec].append(e[:len(crops)])
                if self.augment is not None:
                    v = e[len(crops):].reshape(self.augment.views, len(crops), -1)
                    v[:, ~ok] = 0.0
                    views[b.spec].append(v)
            oks.append(ok)
            tss.append(ts)
            self.progress("frames", {"n": len(ts)})
        if not oks:
            raise ValueError(f"{src.path}: no images")
        ok, ts = np.concatenate(oks), np.concatenate(tss)
        if not ok.any():
            warnings.warn(f"{src.path}: no usable image (unreadable{' or no face' if self.cropper else ''}); "
                          f"features marked invalid", stacklevel=2)
        root = Path(c.images_dir)
        paths = [p.relative_to(root).as_posix() for p in image_paths(src.path)]
        for b in todo:
            v = np.concatenate(views[b.spec], 1) if self.augment is not None else None
            self.store.write_video(b.spec, src.video_id, np.concatenate(feats[b.spec]), ok, ts, IMAGE_FPS,
                                   str(src.path), extras=row_extras(paths, v))
        return len(ts)

    def run(self) -> list:
        """Extract every pending image folder; never raises for one bad folder, returns per-folder results."""
        from affcli.pipeline.extract import VideoResult, feature_fingerprint
        from affcli.pipeline.sources import discover_sources

        c = self.cfg
        sources = discover_sources(images_dir=c.images_dir, videos=c.videos)
        for b in self.backbones:
            self.store.ensure_feature_set(b.spec, feature_fingerprint(b, c, "images", self.crop_fingerprint()))
        todo = {s.video_id: [b.spec for b in self.backbones if not self.store.has_video(b.spec, s.video_id)]
                for s in sources}
        results = [VideoResult(v, "skipped", message="already complete") for v, need in todo.items() if not need]
        pending = [s for s in sources if todo[s.video_id]]
        self.progress("start", {"videos": len(pending), "skipped": len(results),
                                "frames": sum(len(image_paths(s.path)) for s in pending)})
        for s in pending:
            try:
                n = self.extract_folder(s, todo[s.video_id])
                res = VideoResult(s.video_id, "ok", n, specs=todo[s.video_id])
            except Exception as e:  # one bad folder must not stop the run
                msg = str(e) if str(s.path) in str(e) else f"{s.path}: {type(e).__name__}: {e}"
                for spec in todo[s.video_id]:
                    self.store.record_failure(spec, s.video_id, msg)
                res = VideoResult(s.video_id, "failed", 0, msg)
            results.append(res)
            self.progress("video", {"video": res.video_id, "status": res.status, "message": res.message})
        self._encode_prompts()
        self.store.write_manifest()
        return sorted(results, key=lambda r: r.video_id)

    def _encode_prompts(self) -> None:
        have = set(self.store.text_sets())
        for b in self.backbones:
            for name in (n for n in self.cfg.prompt_sets if hasattr(b, "encode_text") and (n, b.spec) not in have):
                self.store.write_text_embeddings(name, b.spec, PROMPT_SETS[name], b.encode_text(PROMPT_SETS[name]))


def run_image_extract(cfg: Any, progress: Callable[[str, dict], None] | None = None) -> list:
    """Extract `cfg.images_dir` (an ExtractConfig) into its cache; one result per image folder."""
    t0 = time.perf_counter()
    ex = ImageExtractor(cfg, progress)
    res = ex.run()
    ex.elapsed = time.perf_counter() - t0
    return res
