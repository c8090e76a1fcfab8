"""Still-image datasets (LSD's class folders, any tree of jpg/png) as a source: one "video" per folder, one row per
image, each row's relative path kept; optionally K seeded augmented views per image (random resized crop,
horizontal flip, colour jitter from torchvision.transforms.v2) embedded by the same frozen backbones.

Images have no time: row i gets timestamp i (fps 1). Faces are off by default (LSD-style images are face crops
already: whole images, letterboxed); `image_faces` runs the `--face` detector on each image and crops as the video
path does (aligned or box crops, pipeline/crops.py). The crop and the views enter the feature set's fingerprint.
"""
from __future__ import annotations

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
from affcli.pipeline.config import ExtractConfig, VideoResult, feature_fingerprint, refused_results
from affcli.pipeline.crops import face_crops, resize_batch, whole_frames
from affcli.pipeline.embed import embed_visual
from affcli.pipeline.errors import Interrupted
from affcli.pipeline.frames import MAX_IMAGE_PIXELS, image_size, read_image, warn_invalid
from affcli.pipeline.prompt_encode import encode_prompts, named_prompt_sets
from affcli.pipeline.sources import Refused, Source, image_paths
from affcli.pipeline.stages import to_device

IMAGE_FPS = 1.0
CROP_SCALE = (0.5, 1.0)
FLIP_P = 0.5
JITTER = (0.4, 0.4, 0.4, 0.1)


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


def _groups(files: list[Path], batch_size: int, max_bytes: int | None) -> Iterator[list[Path]]:
    """Consecutive files in groups of at most `batch_size` whose decoded sizes (from their headers) add up to at most
    `max_bytes` (at least one file per group)."""
    group: list[Path] = []
    total = 0
    for f in files:
        size = image_size(f) if max_bytes is not None else None
        need = size[0] * size[1] * 3 if isinstance(size, tuple) else 0
        if group and (len(group) == batch_size or (max_bytes is not None and total + need > max_bytes)):
            yield group
            group, total = [], 0
        group.append(f)
        total += need
    if group:
        yield group


def iter_image_folder(files: list[Path], batch_size: int = 64, threads: int = 4, max_bytes: int | None = None
                      ) -> Iterator[tuple[list, np.ndarray, np.ndarray]]:
    """Yield (RGB images as a list of uint8 [H,W,3] arrays or None, timestamps [B] = row index, ok [B]) per batch of
    `files`; a batch holds at most `max_bytes` of decoded images (it shrinks with the image size).

    Invalid images (junk, empty, cut short, a header claiming more than one batch may hold) are None with ok=False
    and a one-line warning naming the file (the row stays, as zeros)."""
    max_pixels = MAX_IMAGE_PIXELS if max_bytes is None else max(1, min(MAX_IMAGE_PIXELS, max_bytes // 3))
    start = 0
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="img") as pool:
        for group in _groups(list(files), batch_size, max_bytes):
            decoded = list(pool.map(lambda p: read_image(p, max_pixels), group))
            for path, (_, problem) in zip(group, decoded):
                if problem is not None:
                    warn_invalid(path, problem)
            imgs = [img for img, _ in decoded]
            yield imgs, np.arange(start, start + len(imgs), dtype=np.float64) / IMAGE_FPS, \
                np.array([i is not None for i in imgs], bool)
            start += len(imgs)


class ImageExtractor:
    """Image folders x visual backbones -> cache rows (+ paths, + views), resumable, per-folder error isolation."""

    def __init__(self, cfg: ExtractConfig, progress: Callable[[str, dict], None] | None = None):
        self.cfg = cfg
        self.progress = progress or (lambda event, info: None)
        self.device = resolve_device(cfg.device)
        self.backbones = [build_backbone(s, self.device, seed=cfg.seed) for s in cfg.backbones]
        audio = [b.spec for b in self.backbones if b.modality != "visual"]
        if audio:
            raise ValueError(f"extract --images-dir: {', '.join(audio)} need audio; still images take visual backbones only")
        self.size = max(b.input_size for b in self.backbones)
        self.batch_bytes = cfg.decode_memory_mb * 2**20 // 2  # one batch of decoded images, and its crops and views
        self.augment = ViewAugment(self.size, cfg.views, cfg.seed) if cfg.views > 0 else None
        self.crop = cfg.crop_settings(self.size, self.augment.fingerprint() if self.augment else None)
        self.detector = self.crop.build_detector(self.device, cfg.face_threads)
        self.store = FeatureStore(cfg.cache, mode="a")  # once the parts are built: a refused run leaves no store

    def _crops(self, imgs: list, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crops = np.zeros((len(imgs), self.size, self.size, 3), np.uint8)
        ok = ok.copy()
        for i, img in enumerate(imgs):  # images differ in size: one resize (or face detection) per image
            if img is None:
                continue
            if self.detector is None:
                crops[i] = whole_frames(img[None], self.size)[0]
            else:
                crops[i], ok[i] = self._face(img)
        return crops, ok

    def _face(self, img: np.ndarray) -> tuple[np.ndarray, bool]:
        """The face crop of one image (zeros without a face) and whether a face was found."""
        x = to_device(np.ascontiguousarray(img[None]), self.device)
        d = self.detector(x)
        s = self.crop
        crop = face_crops(x, d.boxes, d.landmarks, d.valid, s.size, bool(s.align), s.margin)
        return crop[0].permute(1, 2, 0).cpu().numpy(), bool(d.valid[0])

    def _embed(self, b: Any, crops: np.ndarray) -> np.ndarray:
        return embed_visual(b, resize_batch(crops, b.input_size))

    def extract_folder(self, src: Source, specs: list[str]) -> int:
        """Embed every image of one folder (and its views) with the backbones of `specs`, write them; returns rows."""
        c = self.cfg
        todo = [b for b in self.backbones if b.spec in specs]
        feats: dict[str, list] = {b.spec: [] for b in todo}
        views: dict[str, list] = {b.spec: [] for b in todo}
        oks, tss = [], []
        refused: list[Refused] = []
        files = image_paths(src.path, refused)
        for r in refused:
            warnings.warn(r.message, stacklevel=2)
        for imgs, ts, ok in iter_image_folder(files, c.decode_batch, max(1, c.decode_workers), self.batch_bytes):
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
            raise ValueError(f"{src.path}: no images" + (" with a usable name" if refused else ""))
        ok, ts = np.concatenate(oks), np.concatenate(tss)
        if not ok.any():
            warnings.warn(f"{src.path}: no usable image (unreadable{' or no face' if self.detector else ''}); "
                          f"features marked invalid", stacklevel=2)
        root = Path(c.images_dir)
        paths = [p.relative_to(root).as_posix() for p in files]
        for b in todo:
            v = np.concatenate(views[b.spec], 1) if self.augment is not None else None
            self.store.write_video(b.spec, src.video_id, np.concatenate(feats[b.spec]), ok, ts, IMAGE_FPS,
                                   str(src.path), extras=row_extras(paths, v))
        return len(ts)

    def run(self) -> list[VideoResult]:
        """Extract every pending image folder; never raises for one bad folder, returns per-folder results."""
        c = self.cfg
        refused: list[Refused] = []
        sources = c.sources(refused)
        for b in self.backbones:
            self.store.ensure_feature_set(b.spec, feature_fingerprint(b, self.crop, c.audio_align))
        todo = {s.video_id: [b.spec for b in self.backbones if not self.store.has_video(b.spec, s.video_id)]
                for s in sources}
        results = refused_results(refused, self.progress)
        results += [VideoResult(v, "skipped", message="already complete") for v, need in todo.items() if not need]
        pending = [s for s in sources if todo[s.video_id]]
        self.progress("start", {"videos": len(pending), "skipped": len(results),
                                "frames": sum(len(image_paths(s.path, refused=[])) for s in pending)})
        for i, s in enumerate(pending):
            try:
                n = self.extract_folder(s, todo[s.video_id])
                res = VideoResult(s.video_id, "ok", n, specs=todo[s.video_id])
            except KeyboardInterrupt:  # the folder being written has no complete mark: redone on resume
                self.store.write_manifest()
                raise Interrupted("extract", sum(r.status == "ok" for r in results),
                                  [p.video_id for p in pending[i:]]) from None
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
        encode_prompts(self.store, self.backbones, named_prompt_sets(self.cfg.prompt_sets))


def run_image_extract(cfg: ExtractConfig, progress: Callable[[str, dict], None] | None = None) -> list[VideoResult]:
    """Extract `cfg.images_dir` into its cache; one result per image folder."""
    return ImageExtractor(cfg, progress).run()
