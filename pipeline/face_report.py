"""`affcli cache faces`: audit the face behind each cached frame (box, score, 5 landmarks from the cache's face
record), summarised per video and drawn on a few frames decoded again from the source video or frames folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from affcli.common.cli_options import option
from affcli.pipeline.errors import MediaError

DEFAULT_FRAMES = 4
LANDMARK_COLOURS = ("#3b82f6", "#3b82f6", "#facc15", "#ef4444", "#ef4444")  # eyes, nose, mouth corners
BOX_COLOUR, MISS_COLOUR = "#22c55e", "#ef4444"


@dataclass
class FaceReport:
    """A video's face record summarised: frames with a face, their mean score, and the chosen frames' rows."""

    video_id: str
    spec: str
    source: str
    n_frames: int
    found: int
    mean_score: float | None
    with_landmarks: int
    settings: dict[str, Any]
    rows: list[dict[str, Any]]
    rendered: list[Path]

    @property
    def found_ratio(self) -> float:
        return self.found / self.n_frames if self.n_frames else 0.0


def parse_frames(text: str | None, n_frames: int, k: int = DEFAULT_FRAMES) -> list[int]:
    """'0,10,20' -> [0, 10, 20] (each checked against the video's length); None -> k frames evenly spread."""
    if n_frames < 1:
        raise ValueError("the face record holds no frames")
    if text is None:
        return sorted({int(i) for i in np.linspace(0, n_frames - 1, min(k, n_frames)).round()})
    try:
        idx = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ValueError(f"--frames {text!r}: expected frame indices such as 0,10,20") from None
    bad = [i for i in idx if not 0 <= i < n_frames]
    if not idx or bad:
        raise ValueError(f"--frames {text!r}: frames run 0..{n_frames - 1}" + (f" ({bad[0]} is outside)" if bad else ""))
    return sorted(set(idx))


def frame_rows(box: np.ndarray, score: np.ndarray, landmarks: np.ndarray, timestamps: np.ndarray,
               frames: list[int]) -> list[dict[str, Any]]:
    """One row per chosen frame: time, whether a face was used, its score, box and landmarks (None where absent)."""
    rows = []
    for i in frames:
        face = bool(np.isfinite(box[i]).all())
        marks = bool(np.isfinite(landmarks[i]).all())
        rows.append({"frame": i, "time": float(timestamps[i]) if i < len(timestamps) else None, "face": face,
                     "score": float(score[i]) if face else None, "box": box[i].tolist() if face else None,
                     "landmarks": landmarks[i].tolist() if marks else None})
    return rows


def summarise(rec: Any, frames: list[int]) -> FaceReport:
    """FaceReport of a `FeatureStore.read_faces` record over the chosen frames."""
    found = np.isfinite(rec.box).all(1)
    marks = np.isfinite(rec.landmarks).all((1, 2))
    a = rec.attrs
    settings = {k: v for k, v in a.items() if k not in ("timestamps", "valid", "video_id", "spec", "source",
                                                         "fps", "n_frames")}
    return FaceReport(a.get("video_id", ""), a.get("spec", ""), str(a.get("source", "")), len(rec.score),
                      int(found.sum()), float(rec.score[found].mean()) if found.any() else None, int(marks.sum()),
                      settings, frame_rows(rec.box, rec.score, rec.landmarks, np.asarray(a.get("timestamps", [])),
                                           frames), [])


def find_source(video_id: str, recorded: str, video_dir: Path | None = None,
                frames_dir: Path | None = None) -> tuple[Path, str]:
    """(path, 'video' | 'frames') of a video's source: looked up by id in --video-dir / --frames-dir as extract
    does, else the path the cache recorded; ValueError naming what was tried."""
    from affcli.pipeline.sources import discover_sources

    if video_dir is not None or frames_dir is not None:
        src = discover_sources(video_dir=video_dir, frames_dir=frames_dir, videos=[video_id])[0]
        return src.path, src.kind
    path = Path(recorded) if recorded else None
    if path is None or not path.exists():
        raise ValueError(f"source of video {video_id!r} not found (the cache recorded {recorded or 'none'}); "
                         "give --video-dir or --frames-dir")
    return path, "frames" if path.is_dir() else "video"


def decode_frames(path: Path, kind: str, frames: list[int]) -> dict[int, np.ndarray]:
    """The chosen frames (RGB uint8 [H, W, 3]) of a video file (decoded in order, converted only where chosen,
    stopping after the last) or a frames folder (frame i is file i + 1)."""
    if kind == "frames":
        from PIL import Image

        from affcli.pipeline.frames import _frame_files

        files = _frame_files(path)
        return {i: np.asarray(Image.open(files[i + 1]).convert("RGB")) for i in frames if i + 1 in files}
    import av

    wanted, out = set(frames), {}
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    out[i] = frame.to_ndarray(format="rgb24")
                if i >= max(frames):
                    break
    except (av.FFmpegError, OSError) as e:
        raise MediaError(path, f"cannot decode ({type(e).__name__}: {e})") from None
    return out


def draw_face(img: np.ndarray, row: dict[str, Any], label: str) -> Any:
    """A PIL image of the frame with the face box, its five landmarks and a caption (frame, score) drawn on."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    width = max(2, round(max(im.size) / 250))
    if row["face"]:
        d.rectangle(row["box"], outline=BOX_COLOUR, width=width)
    for (x, y), colour in zip(row["landmarks"] or [], LANDMARK_COLOURS):
        r = 1.5 * width
        d.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    caption = f"{label} frame {row['frame']}: " + (f"score {row['score']:.3f}" if row["face"] else "no face")
    d.rectangle([0, 0, 8 * len(caption) + 8, 16], fill="black")
    d.text((4, 2), caption, fill=BOX_COLOUR if row["face"] else MISS_COLOUR)
    return im


def render(report: FaceReport, source: Path, kind: str, out_dir: Path) -> list[Path]:
    """PNG per chosen frame under out_dir (`<video>_<frame>.png`); MediaError if a frame cannot be decoded."""
    frames = [r["frame"] for r in report.rows]
    imgs = decode_frames(source, kind, frames)
    missing = [i for i in frames if i not in imgs]
    if missing:
        raise MediaError(source, f"frame {missing[0]} could not be read (the source has fewer frames than the cache)")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for row in report.rows:
        p = out_dir / f"{report.video_id}_{row['frame']:06d}.png"
        draw_face(imgs[row["frame"]], row, report.video_id).save(p)
        paths.append(p)
    return paths


def face_report(cache: str | Path, video_id: str, frames: str | None = None, spec: str | None = None,
                render_dir: Path | None = None, video_dir: Path | None = None,
                frames_dir: Path | None = None) -> FaceReport:
    """Summarise a cached video's face record; with `render_dir`, draw it on the chosen frames of its source.
    Errors are one line: CacheError (no cache / no face record), ValueError (bad --frames, no source), MediaError."""
    from affcli.cache.store import FeatureStore

    rec = FeatureStore(cache, mode="r").read_faces(video_id, spec)
    report = summarise(rec, parse_frames(frames, len(rec.score)))
    if render_dir is not None:
        source, kind = find_source(video_id, report.source, video_dir, frames_dir)
        report.rendered = render(report, source, kind, Path(render_dir))
    return report


def format_report(r: FaceReport) -> list[str]:
    """The lines `affcli cache faces` prints."""
    score = "-" if r.mean_score is None else f"{r.mean_score:.3f}"
    lines = [f"{r.video_id} ({r.spec}): face in {r.found}/{r.n_frames} frames ({r.found_ratio:.1%}), mean score "
             f"{score}, landmarks in {r.with_landmarks}",
             "settings: " + (", ".join(f"{k}={v}" for k, v in sorted(r.settings.items())) or "none recorded"),
             f"{'frame':>6} {'time_s':>8} {'score':>6}  box (x0 y0 x1 y1)"]
    for row in r.rows:
        t = "-" if row["time"] is None else f"{row['time']:.3f}"
        if row["face"]:
            box = " ".join(f"{v:.0f}" for v in row["box"])
            lm = "" if row["landmarks"] else "  (no landmarks)"
            lines.append(f"{row['frame']:>6} {t:>8} {row['score']:>6.3f}  {box}{lm}")
        else:
            lines.append(f"{row['frame']:>6} {t:>8} {'-':>6}  no face")
    lines += [f"wrote {p}" for p in r.rendered]
    return lines


@dataclass
class FacesOptions:
    """`affcli cache faces` (besides CACHE and VIDEO)."""

    frames: str | None = option(None, help="Frame indices, e.g. 0,10,20.", shown="4 spread over the video")
    feature_set: str | None = option(None, help="Read this set's face record.", shown="the first that has one")
    render: Path | None = option(None, help="Folder for PNGs of the chosen frames with the box and the five landmarks "
                                            "drawn on.")
    video_dir: Path | None = option(None, help="Find the source video here by id.", shown="the path the cache "
                                                                                         "recorded")
    frames_dir: Path | None = option(None, help="Or its frames folder here by id.")


def faces_command(cache: Path, video: str, o: FacesOptions) -> int:
    """Body of `affcli cache faces`: the report's lines, or a one-line error (exit 2)."""
    frames, feature_set, render_dir, video_dir, frames_dir = o.frames, o.feature_set, o.render, o.video_dir, o.frames_dir
    import typer

    from affcli.cache.errors import CacheError
    from affcli.common.commands import fail, guarded

    if video_dir is not None and frames_dir is not None:
        fail("give --video-dir or --frames-dir, not both")
    rep = guarded((CacheError, MediaError, ValueError), face_report, cache, video, frames, feature_set, render_dir,
                  video_dir, frames_dir)
    for line in format_report(rep):
        typer.echo(line)
    return 0
