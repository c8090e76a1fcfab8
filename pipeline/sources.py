"""Find the videos (files, Aff-Wild2 frame folders, or folders of still images) to extract, each under a unique id."""

from __future__ import annotations

import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from affcli.common.ids import parse_id_list
from affcli.common.names import safe_name
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


@dataclass(frozen=True)
class Refused:
    """An input left out at discovery: its path and the one-line reason (a name that cannot be an id)."""

    video_id: str
    path: Path
    message: str


# bidirectional overrides and isolates: they make a printed name read differently from the bytes it holds
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def shown(text: str) -> str:
    """`text` with control, line-break and bidi characters escaped (`\\n`, `\\x01`, `\\u202e`): safe on one line."""
    return "".join(c if c.isprintable() and c not in _BIDI else ascii(c)[1:-1] for c in str(text))


def name_problem(name: str) -> str | None:
    """What makes `name` unusable as an id or a stored row name (None: fine): a control, line-break or bidi
    character, surrounding whitespace, bytes that are not UTF-8, or what `common.names.safe_name` refuses (empty,
    `.`/`..`, too long). The same rule as the ids `cache import-h5` accepts, plus the names a file cannot take."""
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in _BIDI
           or len(("a" + c + "a").splitlines()) > 1]
    if bad:
        return f"holds the control character {ascii(bad[0])[1:-1]}"
    if name != name.strip():
        return "has leading or trailing whitespace (an id filter could not name it)"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    try:
        safe_name(name, "name")
    except ValueError as e:
        return str(e).split(": it cannot")[0].split(" ", 2)[-1]
    return None


def _refused(src: Source, problem: str) -> Refused:
    what = "folder" if src.kind != "video" else "file"
    return Refused(src.video_id, src.path, f"{shown(str(src.path))}: refused: the {what} name gives the id "
                                           f"'{shown(src.video_id)}', which {problem}; rename it")


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


def image_paths(folder: Path, refused: list[Refused] | None = None) -> list[Path]:
    """The jpg/png files directly in `folder`, sorted by name (subfolders are their own videos). A file whose name
    holds a control character or is not UTF-8 (its stored row path would break) is left out: appended to `refused`,
    or warned about in one line when no list is given."""
    found = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                   and not p.name.startswith("."))
    keep = []
    for p in found:
        problem = name_problem(p.name)
        if problem is None:
            keep.append(p)
            continue
        r = Refused(p.name, p, f"{shown(str(p))}: refused: the image name {problem}; rename it")
        if refused is None:
            warnings.warn(r.message, stacklevel=2)
        else:
            refused.append(r)
    return keep


def _holds_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") for p in folder.iterdir())


def image_folders(root: Path) -> list[Path]:
    """`root` and every folder below it (hidden ones skipped) that directly holds at least one image."""
    root = Path(root)
    cands = [root, *(p for p in root.rglob("*") if p.is_dir()
                     and not any(part.startswith(".") for part in p.relative_to(root).parts))]
    return sorted(p for p in cands if _holds_images(p))


def _image_folders(images_dir: Path) -> list[Source]:
    root = _require_dir(images_dir, "images_dir")
    return [Source(image_folder_id(root, p), p, "images") for p in image_folders(root)]


def image_folder_id(root: Path, folder: Path) -> str:
    """The id of an image folder: its path relative to `root`, parts joined by '__', other characters made safe."""
    rel = Path(folder).relative_to(root)
    parts = rel.parts or (Path(root).resolve().name,)
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in parts)


def _split_refused(found: list[Source]) -> tuple[list[Source], list[Refused]]:
    """Sources whose id is usable, and the refusals of the others."""
    good, bad = [], []
    for src in sorted(found, key=lambda s: str(s.path)):
        problem = name_problem(src.video_id)
        if problem is None:
            good.append(src)
        else:
            bad.append(_refused(src, problem))
    return good, bad


def discover_sources(
    video_dir: Path | None = None,
    frames_dir: Path | None = None,
    videos: list[str] | str | Path | None = None,
    images_dir: Path | None = None,
    refused: list[Refused] | None = None,
) -> list[Source]:
    """Sources sorted by id. Video files are searched recursively, frame folders are the subfolders of `frames_dir`.

    Two sources with the same id raise ValueError naming both paths (features would overwrite each other).
    Image folders are every folder under `images_dir` (itself included) that directly holds jpg/png files.
    `videos` (see common.ids.parse_id_list) keeps only the listed ids; an Aff-Wild2 label id `<video>_left`/`_right` selects `<video>`.
    An id in the filter that matches nothing raises ValueError naming it.
    A file or folder whose name cannot be an id (a newline or other control character, not UTF-8, `.`, ...) is left
    out and the others go on: it is appended to `refused` (one line naming it), or warned about when no list is given.
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
    found, bad = _split_refused(found)
    if isinstance(videos, list):  # a list filter may name a refused id (API callers): refuse it, keep the rest
        named = {str(v) for v in videos}
        bad = [r for r in bad if r.video_id in named]
        hit = {r.video_id for r in bad}
        videos = [v for v in videos if str(v) not in hit]
        if hit and not videos:
            found = []
    elif videos is not None:
        bad = []  # a typed filter cannot name them: they are not asked for
    for r in bad:
        if refused is None:
            warnings.warn(r.message, stacklevel=2)
        else:
            refused.append(r)
    if not found and not bad:
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
            raise ValueError(f"unknown video ids in the filter: {', '.join(map(shown, unknown))}")
        by_id = {vid: by_id[vid] for vid in set(wanted)}
    return [by_id[vid] for vid in sorted(by_id)]

