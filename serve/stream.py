"""`affcli stream`: decode frame by frame, embed each frame once with the run's frozen backbones, run the causal head
on a ring buffer (heads.online) and emit each frame's forecast with its latency.

Lives in serve/ because it joins stage 1 (pipeline: decoding, crops, backbones, live audio windows) and stage 2
(heads) while neither imports the other. Audio features are the causal windows extraction computed
(`--audio-align causal`), run as the track's samples arrive; faces tracked with `--detect-every k` come out when the
tracker's next key frame arrives, as in extraction (each row says how many frames later it was emitted).
"""
from __future__ import annotations

import csv
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from affcli.common.cli_options import option

EXIT_INTERRUPTED = 130


@dataclass
class StreamRow:
    """One emitted frame: input frame e (0-based), its time, the forecast for frame e + horizon, the latency (ms, from
    the frame's arrival to its row) and `delay` (frames that arrived after it before its row: the tracker's wait)."""

    frame: int
    time_s: float
    target: int
    valid: bool
    preds: dict[str, np.ndarray]
    latency_ms: float
    delay: int = 0


def frame_source(video: str | Path | None = None, frames: str | Path | None = None, camera: int | str | None = None,
                 fps: float = 30.0, size: int | None = None, max_frames: int | None = None
                 ) -> Iterator[tuple[np.ndarray, float, bool]]:
    """(RGB uint8 [H, W, 3], time s, ok) one frame at a time from exactly one of a video file, a frame folder
    (NNNNN.jpg, `size` as extract resizes it) or a camera (an OpenCV index, or a device path or stream URL)."""
    given = [x is not None for x in (video, frames, camera)]
    if sum(given) != 1:
        raise ValueError("stream: give exactly one of --video FILE, --frames DIR, --camera N|DEVICE|URL")
    n = 0
    if video is not None:
        from affcli.pipeline.media import iter_video_frames

        it = ((f[0], float(t[0]), True) for f, t in iter_video_frames(Path(video), batch_size=1))
    elif frames is not None:
        from affcli.pipeline.frames import iter_frame_folder

        it = ((f[0], float(t[0]), bool(o[0])) for f, t, o in iter_frame_folder(Path(frames), 1, fps, size, threads=1))
    else:
        it = camera_frames(camera)
    for item in it:
        if max_frames is not None and n >= max_frames:
            return
        n += 1
        yield item


def camera_frames(camera: int | str, capture: Callable[[Any], Any] | None = None
                  ) -> Iterator[tuple[np.ndarray, float, bool]]:
    """Frames of an OpenCV capture (`cv2.VideoCapture`, or `capture`): an index (`0`, `"1"`), a device path or a
    stream URL; time = seconds since the first frame was asked for, until it stops."""
    import cv2

    target: int | str = int(camera) if isinstance(camera, int) or str(camera).isdigit() else str(camera)
    cap = (capture or cv2.VideoCapture)(target)
    if not cap.isOpened():
        raise ValueError(f"stream: camera {target} cannot be opened")
    t0 = time.perf_counter()
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.perf_counter() - t0, True
    finally:
        cap.release()


class RunHead:
    """The heads of a run of any kind served frame by frame: one OnlineHead per single run inside it, each fed by the
    featurizer of its own feature sets, their outputs combined as offline (heads.infer.combine, the run's weights and
    method), so an ensemble streams like the run `predict` reads."""

    def __init__(self, view: Any, heads: dict[Path, Any], keys: dict[Path, tuple[str, ...]]):
        horizons = {int(h.horizon) for h in heads.values()}
        if len(horizons) != 1:
            raise ValueError(f"stream: run {view.path}: members forecast different horizons ({sorted(horizons)})")
        self.view, self.heads, self.keys = view, heads, keys
        self.horizon = horizons.pop()

    @property
    def n(self) -> int:
        """Frames seen so far."""
        return next(iter(self.heads.values())).n

    def step(self, inputs: dict[tuple[str, ...], tuple[dict, dict]]) -> dict[str, np.ndarray]:
        """{output key: prediction [k]} for the newest frame, from each featurizer's (features, validity)."""
        from affcli.heads.infer.combine import combine

        def out(v: Any) -> dict[str, np.ndarray]:
            if v.kind == "single":
                return self.heads[v.path].step(*inputs[self.keys[v.path]])
            parts = [{k: a[None] for k, a in out(m).items()} for m in v.members]
            return {k: a[0] for k, a in combine(v.cfg.task, parts, v.weights, v.method,
                                                [m.post for m in v.members]).items()}

        return out(self.view)


class Streamer:
    """A finished causal run (single, fold or ensemble) served frame by frame: FrameFeaturizers (backbones, crop, live
    audio) -> OnlineHeads (ring buffers), combined as the run combines them. A frame's row comes once every
    featurizer has resolved it (with --detect-every k, when the tracker's next key frame arrives)."""

    def __init__(self, featurizers: dict[tuple[str, ...], Any], head: RunHead, task: str):
        self.featurizers, self.head, self.task = featurizers, head, task
        self._waiting: dict[tuple[str, ...], deque] = {k: deque() for k in featurizers}
        self._arrived: dict[int, float] = {}
        self._n = 0

    @property
    def featurizer(self) -> Any:
        """The (first) featurizer."""
        return next(iter(self.featurizers.values()))

    @property
    def crop_size(self) -> int:
        """The largest crop side of every featurizer (what a frame folder is resized to; 0 without a visual set)."""
        return max(f.crop_size for f in self.featurizers.values())

    @property
    def reads_audio(self) -> bool:
        """Whether the run's features include audio."""
        return any(f.audio for f in self.featurizers.values())

    def set_audio(self, audio: Callable[[], Iterator[np.ndarray]] | None) -> None:
        """Feed every featurizer's audio features from this live track (None: none, audio features invalid)."""
        for f in self.featurizers.values():
            f.set_audio(audio)

    @classmethod
    def from_run(cls, run_dir: str | Path, source_kind: str = "video", cache: str | Path | None = None,
                 device: str | None = None, seed: int = 0,
                 audio: Callable[[], Iterator[np.ndarray]] | None = None) -> "Streamer":
        """Load the run's heads (each refused unless causal and `last`-position) and rebuild their backbones, crops
        and audio windows from the fingerprints in its cache (`cache` overrides the run's); `audio` gives the live
        track's chunks (see FrameFeaturizer)."""
        from affcli.cache.store import FeatureStore
        from affcli.common.device import resolve_device
        from affcli.heads.config import RunConfig
        from affcli.heads.infer.online import OnlineHead
        from affcli.heads.infer.runs import open_run
        from affcli.heads.model.checkpoint import load_model
        from affcli.serve.features import FrameFeaturizer

        view = open_run(run_dir, str(cache) if cache else None, device=device)
        view.cfg.check_paths(labels=False)
        dev = resolve_device(view.cfg.device)
        mods = FeatureStore(view.cfg.cache, mode="r").modalities(list(view.cfg.features))
        heads, keys, featurizers = {}, {}, {}
        for leaf in view.leaves():
            cfg = RunConfig.from_run(leaf, cache=view.cfg.cache, device=device)
            model = load_model(leaf, dev)
            where = f"stream: run {run_dir}" + (f" (member {leaf})" if leaf != view.path else "")
            heads[leaf] = OnlineHead(model, cfg.window, cfg.amp, where=where)
            if getattr(cfg, "audio_valid", None) and "audio" in model.modalities:
                raise ValueError(f"{where} masks its audio frames with --audio-valid {cfg.audio_valid}, which stream "
                                 f"does not compute live; train without --audio-valid to stream it")
            keys[leaf] = tuple(s for s in cfg.features if mods[s] in model.modalities)
        for key in dict.fromkeys(keys.values()):
            featurizers[key] = FrameFeaturizer.from_cache(view.cfg.cache, list(key), source_kind, dev, seed, audio)
        return cls(featurizers, RunHead(view, heads, keys), view.cfg.task)

    def _rows(self) -> list[StreamRow]:
        out = []
        while all(self._waiting.values()):
            got = {k: q.popleft() for k, q in self._waiting.items()}
            first = next(iter(got.values()))
            preds = self.head.step({k: (f.feats, f.valid) for k, f in got.items()})
            ms = (time.perf_counter() - self._arrived.pop(first.index)) * 1e3
            valid = all(all(f.valid.values()) for f in got.values())
            out.append(StreamRow(first.index, first.time_s, first.index + self.head.horizon, valid, preds, ms,
                                 self._n - 1 - first.index))
        return out

    def step(self, frame: np.ndarray, time_s: float = 0.0, ok: bool = True) -> list[StreamRow]:
        """Take one frame; return the rows of the frames resolved by it (itself, or with --detect-every k the frames
        since the last key frame once the next arrives). Latency: from a frame's arrival to its row."""
        self._arrived[self._n] = time.perf_counter()
        self._n += 1
        for k, f in self.featurizers.items():
            self._waiting[k].extend(f.push(frame, time_s, ok))
        return self._rows()

    def finish(self) -> list[StreamRow]:
        """The rows of the frames a tracker still holds when the source ends."""
        for k, f in self.featurizers.items():
            self._waiting[k].extend(f.finish())
        return self._rows()

    def run(self, source: Iterator[tuple[np.ndarray, float, bool]]) -> Iterator[StreamRow]:
        """Rows for every frame of `source`, as they come."""
        for frame, t, ok in source:
            yield from self.step(frame, t, ok)
        yield from self.finish()


def _columns(row: StreamRow) -> list[str]:
    preds = [f"{k}_{j}" for k, p in row.preds.items() for j in range(len(p))]
    return ["frame", "time_s", "target_frame", "valid", *preds, "latency_ms", "delay_frames"]


class StreamInterrupted(KeyboardInterrupt):
    """Ctrl-C during a stream: `frames` rows were written (each one whole)."""

    def __init__(self, frames: int):
        super().__init__(frames)
        self.frames = frames


def write_rows(rows: Iterator[StreamRow], out: IO[str]) -> list[float]:
    """CSV (1-based frame numbers as in ABAW files), flushed per row so a reader sees each frame live; returns the
    latencies (ms). A Ctrl-C stops it between rows (StreamInterrupted: the rows written so far are whole)."""
    w, lat = None, []
    try:
        for r in rows:
            if w is None:
                w = csv.writer(out)
                w.writerow(_columns(r))
            w.writerow([r.frame + 1, f"{r.time_s:.4f}", r.target + 1, int(r.valid),
                        *(f"{x:.6f}" for p in r.preds.values() for x in p), f"{r.latency_ms:.3f}", r.delay])
            out.flush()
            lat.append(r.latency_ms)
    except KeyboardInterrupt:
        out.flush()
        raise StreamInterrupted(len(lat)) from None
    return lat


def audio_track(path: str | Path, sample_rate: int = 16000) -> Callable[[], Iterator[np.ndarray]]:
    """A factory of lazy chunk iterators over a media file's audio track (one per audio feature set)."""
    from affcli.pipeline.media import iter_audio

    return lambda: iter_audio(Path(path), sample_rate)


def stream_run(run_dir: str | Path, video: str | Path | None = None, frames: str | Path | None = None,
               camera: int | str | None = None, out: str | Path | None = None, cache: str | Path | None = None,
               device: str | None = None, seed: int = 0, max_frames: int | None = None,
               audio: str | Path | None = None, fps: float | None = None) -> dict[str, float]:
    """Stream a source through a run, writing CSV rows to `out` (stdout when None); returns the latency summary. A run
    that reads audio takes the live track of `audio` (default: the video's own); without one its audio features are
    invalid, with one warning line, as extraction stores a video without audio."""
    from affcli.common.notices import warn
    from affcli.pipeline.errors import NoAudioError
    from affcli.pipeline.media import iter_audio

    kind = "video" if video is not None else "frames" if frames is not None else "camera"
    s = Streamer.from_run(run_dir, kind, cache, device, seed)
    if s.reads_audio:
        track = audio if audio is not None else video
        if track is not None:
            try:
                next(iter_audio(Path(track)), None)  # opens: no audio stream, or none that decodes, said here
            except NoAudioError:
                if audio is not None:
                    raise
                track = None
        if track is None:
            warn(f"stream: {'the video has no audio track' if video is not None else 'no --audio FILE'}: the run's "
                 f"audio features are marked invalid")
        s.set_audio(None if track is None else audio_track(track))
    elif audio is not None:
        warn(f"stream: run {run_dir} reads no audio features; --audio {audio} is not used")
    fps = fps or (_frames_fps(s) if frames is not None else 30.0)
    src = frame_source(video, frames, camera, fps=fps, size=s.crop_size or None, max_frames=max_frames)
    if out is None:
        lat = write_rows(s.run(src), sys.stdout)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as f:
            lat = write_rows(s.run(src), f)
    return latency_summary(lat)


def _frames_fps(s: Streamer) -> float:
    """The frame rate extraction gave a frame folder (recorded in its crop), for the frames' timestamps."""
    for st in (st for f in s.featurizers.values() for st in f.stages):
        if st.settings.fps:
            return float(st.settings.fps)
    return 30.0


def latency_summary(lat_ms: list[float], skip: int = 1) -> dict[str, float]:
    """frames, p50/p99 latency (ms) and frames/s (1000 / mean latency), leaving out the first `skip` warm-up frames."""
    a = np.asarray(lat_ms[skip:] if len(lat_ms) > skip else lat_ms, np.float64)
    if a.size == 0:
        return {"frames": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "fps": float("nan")}
    return {"frames": len(lat_ms), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "fps": float(1e3 / a.mean())}


@dataclass
class StreamOptions:
    """`affcli stream`."""

    run: Path = option(help="A causal run folder (train-head --causal --label-position last [--horizon H]); its audio "
                            "features must be extracted with --audio-align causal.")
    video: Path | None = option(None, help="A video file, decoded frame by frame (its audio track feeds audio "
                                           "features).")
    frames: Path | None = option(None, help="A folder of frames named 00001.jpg ...")
    camera: str | None = option(None, help="A camera: an OpenCV index (0), a device path (/dev/video0) or a stream "
                                           "URL, until it stops or Ctrl-C.")
    audio: Path | None = option(None, help="A media file whose audio track feeds the run's audio features (default: "
                                           "the --video's own; none: they are marked invalid).")
    out: Path | None = option(None, help="CSV of per-frame forecasts and latency (default: stdout).")
    cache: Path | None = option(None, help="Feature cache holding the run's feature sets (default: the run's, from "
                                           "its config.json). Its fingerprints give the backbones and the crop.")
    seed: int = option(0, help="Seed of random-weight backbones (tiny, /random), as given to extract.")
    max_frames: int | None = option(None, help="Stop after N frames.")
    device: str | None = option(None, help="auto, cpu, cuda (default: the run's).")


def stream_command(o: StreamOptions) -> int:
    """Body of `affcli stream`: one-line errors; the latency summary on stderr (stdout may carry the CSV)."""
    from rich.console import Console
    from rich.markup import escape

    from affcli.cache.errors import CacheError
    from affcli.heads.commands import EXIT_OK, EXIT_REFUSED, USER_ERRORS
    from affcli.pipeline.backbones import BackboneError
    from affcli.pipeline.errors import MediaError

    console = Console(stderr=True)
    try:
        s = stream_run(o.run, o.video, o.frames, o.camera, o.out, o.cache, o.device, o.seed, o.max_frames, o.audio)
    except (*USER_ERRORS, CacheError, MediaError, BackboneError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        console.print(f"[red]error[/red]: run {o.run}: {escape(msg)}", highlight=False, soft_wrap=True)
        return EXIT_REFUSED
    except KeyboardInterrupt as e:
        n = f"{e.frames} frame rows written whole" if isinstance(e, StreamInterrupted) else "stopped"
        console.print(f"[yellow]stream interrupted (Ctrl-C): {n}" + (f" to {escape(str(o.out))}" if o.out else "")
                      + "[/yellow]", highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    console.print(f"stream: {s['frames']} frames, latency p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, "
                  f"{s['fps']:.1f} frames/s" + (f" -> {o.out}" if o.out else ""), highlight=False)
    return EXIT_OK
