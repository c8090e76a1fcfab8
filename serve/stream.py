"""`affcli stream`: decode frame by frame, embed each frame once with the run's frozen backbones, run the causal head
on a ring buffer (heads.online) and emit each frame's forecast with its latency.

Lives in serve/ because it joins stage 1 (pipeline: decoding, crops, backbones) and stage 2 (heads) while neither
imports the other. Visual-only heads for now: audio would need the waveform embedded causally chunk by chunk.
"""
from __future__ import annotations

import csv
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from affcli.common.cli_options import option


@dataclass
class StreamRow:
    """One emitted frame: input frame e (0-based), its time, the forecast for frame e + horizon, the latency (ms)."""

    frame: int
    time_s: float
    target: int
    valid: bool
    preds: dict[str, np.ndarray]
    latency_ms: float


def frame_source(video: str | Path | None = None, frames: str | Path | None = None, camera: int | None = None,
                 fps: float = 30.0, size: int | None = None, max_frames: int | None = None
                 ) -> Iterator[tuple[np.ndarray, float, bool]]:
    """(RGB uint8 [H, W, 3], time s, ok) one frame at a time from exactly one of a video file, a frame folder
    (NNNNN.jpg, `size` as extract resizes it) or a camera index."""
    given = [x is not None for x in (video, frames, camera)]
    if sum(given) != 1:
        raise ValueError("stream: give exactly one of --video FILE, --frames DIR, --camera N")
    n = 0
    if video is not None:
        from affcli.pipeline.media import iter_video_frames

        it = ((f[0], float(t[0]), True) for f, t in iter_video_frames(Path(video), batch_size=1))
    elif frames is not None:
        from affcli.pipeline.frames import iter_frame_folder

        it = ((f[0], float(t[0]), bool(o[0])) for f, t, o in iter_frame_folder(Path(frames), 1, fps, size, threads=1))
    else:
        it = _camera(int(camera))
    for item in it:
        if max_frames is not None and n >= max_frames:
            return
        n += 1
        yield item


def _camera(index: int) -> Iterator[tuple[np.ndarray, float, bool]]:
    import cv2

    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise ValueError(f"stream: camera {index} cannot be opened")
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
    """A finished causal run (single, fold or ensemble) served frame by frame: FrameFeaturizers (backbones + crop) ->
    OnlineHeads (ring buffers), combined as the run combines them."""

    def __init__(self, featurizers: dict[tuple[str, ...], Any], head: RunHead, task: str):
        self.featurizers, self.head, self.task = featurizers, head, task

    @property
    def featurizer(self) -> Any:
        """The (first) featurizer."""
        return next(iter(self.featurizers.values()))

    @property
    def crop_size(self) -> int:
        """The largest crop side of every featurizer (what a frame folder is resized to)."""
        return max(f.crop_size for f in self.featurizers.values())

    @classmethod
    def from_run(cls, run_dir: str | Path, source_kind: str = "video", cache: str | Path | None = None,
                 device: str | None = None, seed: int = 0) -> "Streamer":
        """Load the run's heads (each refused unless causal and `last`-position) and rebuild their visual backbones
        and crops from the fingerprints in its cache (`cache` overrides the run's)."""
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
            if "audio" in model.modalities:
                raise ValueError(f"{where} uses audio features; stream supports visual-only runs for now")
            keys[leaf] = tuple(s for s in cfg.features if mods[s] in model.modalities)
        for key in dict.fromkeys(keys.values()):
            featurizers[key] = FrameFeaturizer.from_cache(view.cfg.cache, list(key), source_kind, dev, seed)
        return cls(featurizers, RunHead(view, heads, keys), view.cfg.task)

    def step(self, frame: np.ndarray, time_s: float = 0.0, ok: bool = True) -> StreamRow:
        """Embed one frame, update the ring buffers, forecast; latency covers crops, backbones and heads."""
        t0 = time.perf_counter()
        e = self.head.n
        inputs = {k: f(frame, ok) for k, f in self.featurizers.items()}
        preds = self.head.step(inputs)
        ms = (time.perf_counter() - t0) * 1e3
        valid = all(all(v.values()) for _, v in inputs.values())
        return StreamRow(e, float(time_s), e + self.head.horizon, valid, preds, ms)

    def run(self, source: Iterator[tuple[np.ndarray, float, bool]]) -> Iterator[StreamRow]:
        """Rows for every frame of `source`, as they come."""
        for frame, t, ok in source:
            yield self.step(frame, t, ok)


def _columns(row: StreamRow) -> list[str]:
    preds = [f"{k}_{j}" for k, p in row.preds.items() for j in range(len(p))]
    return ["frame", "time_s", "target_frame", "valid", *preds, "latency_ms"]


def write_rows(rows: Iterator[StreamRow], out: IO[str]) -> list[float]:
    """CSV (1-based frame numbers as in ABAW files), flushed per row so a reader sees each frame live; returns the
    latencies (ms)."""
    w, lat = None, []
    for r in rows:
        if w is None:
            w = csv.writer(out)
            w.writerow(_columns(r))
        w.writerow([r.frame + 1, f"{r.time_s:.4f}", r.target + 1, int(r.valid),
                    *(f"{x:.6f}" for p in r.preds.values() for x in p), f"{r.latency_ms:.3f}"])
        out.flush()
        lat.append(r.latency_ms)
    return lat


def stream_run(run_dir: str | Path, video: str | Path | None = None, frames: str | Path | None = None,
               camera: int | None = None, out: str | Path | None = None, cache: str | Path | None = None,
               device: str | None = None, seed: int = 0, max_frames: int | None = None) -> dict[str, float]:
    """Stream a source through a run, writing CSV rows to `out` (stdout when None); returns the latency summary."""
    kind = "video" if video is not None else "frames" if frames is not None else "camera"
    s = Streamer.from_run(run_dir, kind, cache, device, seed)
    src = frame_source(video, frames, camera, size=s.crop_size, max_frames=max_frames)
    if out is None:
        lat = write_rows(s.run(src), sys.stdout)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as f:
            lat = write_rows(s.run(src), f)
    return latency_summary(lat)


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

    run: Path = option(help="A causal run folder (train-head --causal --label-position last [--horizon H]); visual "
                            "features only.")
    video: Path | None = option(None, help="A video file, decoded frame by frame.")
    frames: Path | None = option(None, help="A folder of frames named 00001.jpg ...")
    camera: int | None = option(None, help="A camera index (OpenCV), until it stops or Ctrl-C.")
    out: Path | None = option(None, help="CSV of per-frame forecasts and latency (default: stdout).")
    cache: Path | None = option(None, help="Feature cache holding the run's feature sets (default: the run's, from "
                                           "its config.json). Its fingerprints give the backbones and the crop.")
    seed: int = option(0, help="Seed of random-weight backbones (tiny, /random), as given to extract.")
    max_frames: int | None = option(None, help="Stop after N frames.")
    device: str | None = option(None, help="auto, cpu, cuda (default: the run's).")


def stream_command(o: StreamOptions) -> int:
    """Body of `affcli stream`: one-line errors; the latency summary on stderr (stdout may carry the CSV)."""
    from rich.console import Console

    from affcli.cache.errors import CacheError
    from affcli.heads.commands import EXIT_OK, EXIT_REFUSED, USER_ERRORS
    from affcli.pipeline.backbones import BackboneError
    from affcli.pipeline.errors import MediaError

    console = Console(stderr=True)
    try:
        s = stream_run(o.run, o.video, o.frames, o.camera, o.out, o.cache, o.device, o.seed, o.max_frames)
    except (*USER_ERRORS, CacheError, MediaError, BackboneError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        console.print(f"[red]error[/red]: run {o.run}: {msg}", highlight=False, soft_wrap=True)
        return EXIT_REFUSED
    console.print(f"stream: {s['frames']} frames, latency p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, "
                  f"{s['fps']:.1f} frames/s" + (f" -> {o.out}" if o.out else ""), highlight=False)
    return EXIT_OK
