"""Find the videos (files, Aff-Wild2 frame folders, or folders of still images) to extract, each under a unique id."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from affcli.common.ids import parse_id_list
from affcli.common.vocab import subject_video

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Source:
    """One video to extract: its id (file stem, folder name, or an image folder's safe relative path), its path,
    and whether it is a file, a frame folder or a folder of still images (one row per image)."""

    video_id: str
    path: Path
    kind: Literal["video", "frames", "images"]


def _require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{what} {path} is not a folder")
    return path


def _video_files(video_dir: Path) -> list[Source]:
    files = (
        p for p in _require_dir(video_dir, "video_dir").rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file()
    )
    return [Source(p.stem, p, "video") for p in files]


def _frame_folders(frames_dir: Path) -> list[Source]:
    folders = (p for p in _require_dir(frames_dir, "frames_dir").iterdir() if p.is_dir() and not p.name.startswith("."))
    return [Source(p.name, p, "frames") for p in folders]


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


def _image_folders(images_dir: Path) -> list[Source]:
    root = _require_dir(images_dir, "images_dir")
    return [Source(image_folder_id(root, p), p, "images") for p in image_folders(root)]


def image_folder_id(root: Path, folder: Path) -> str:
    """The id of an image folder: its path relative to `root`, parts joined by '__', other characters made safe."""
    rel = Path(folder).relative_to(root)
    parts = rel.parts or (Path(root).resolve().name,)
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in parts)


def discover_sources(
    video_dir: Path | None = None,
    frames_dir: Path | None = None,
    videos: list[str] | str | Path | None = None,
    images_dir: Path | None = None,
) -> list[Source]:
    """Sources sorted by id. Video files are searched recursively, frame folders are the subfolders of `frames_dir`.

    Two sources with the same id raise ValueError naming both paths (features would overwrite each other).
    Image folders are every folder under `images_dir` (itself included) that directly holds jpg/png files.
    `videos` (see common.ids.parse_id_list) keeps only the listed ids; an Aff-Wild2 label id `<video>_left`/`_right` selects `<video>`.
    An id in the filter that matches nothing raises ValueError naming it.
    """
    if video_dir is None and frames_dir is None and images_dir is None:
        raise ValueError("give video_dir, frames_dir or images_dir")
    found: list[Source] = []
    if video_dir is not None:
        found += _video_files(Path(video_dir))
    if frames_dir is not None:
        found += _frame_folders(Path(frames_dir))
    if images_dir is not None:
        found += _image_folders(Path(images_dir))
    if not found:
        where = ", ".join(f"{k} {d}" for k, d in (("--video-dir", video_dir), ("--frames-dir", frames_dir),
                                                   ("--images-dir", images_dir)) if d is not None)
        raise ValueError(f"{where}: nothing to extract (no video files, frame folders or jpg/png images found)")
    by_id: dict[str, Source] = {}
    clashes: list[str] = []
    for src in sorted(found, key=lambda s: (s.video_id, str(s.path))):
        if src.video_id in by_id:
            clashes.append(f"{src.video_id!r} ({by_id[src.video_id].path} and {src.path})")
        else:
            by_id[src.video_id] = src
    if clashes:
        raise ValueError(f"duplicate video ids: {'; '.join(clashes)}; rename one of each pair")
    if videos is not None:
        wanted: list[str] = []
        unknown: list[str] = []
        for vid in parse_id_list(videos):
            base = vid if vid in by_id else subject_video(vid)
            (wanted if base in by_id else unknown).append(base if base in by_id else vid)
        if unknown:
            raise ValueError(f"unknown video ids in the filter: {', '.join(unknown)}")
        by_id = {vid: by_id[vid] for vid in set(wanted)}
    return [by_id[vid] for vid in sorted(by_id)]
