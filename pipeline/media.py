"""Video and audio decoding with PyAV: lazy, threaded, true timestamps, every failure a one-line MediaError.

Failure policy (also in docs/MEDIA.md):
- a file that does not open, has no video stream, or yields no frame at all -> MediaError;
- a file that breaks mid-way (a decoder error, or a stream that ends more than max(2, 1%) frames short
  of the count the container declares, as a cut-off faststart mp4 does) -> the frames decoded before
  the break are yielded, then MediaError(path, "decoding failed after N frames: ...") is raised, so a
  caller marks the video failed instead of storing a silently shortened one;
- a truncated mp4 whose moov atom was at the end (FFmpeg's default) fails at open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from affcli.pipeline.errors import MediaError, NoAudioError


@dataclass
class VideoMeta:
    """What probing a video file tells without decoding it (container figures may be missing or approximate)."""

    video_id: str
    path: Path
    fps: float
    n_frames: int | None
    width: int
    height: int
    has_audio: bool
    duration: float | None


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise MediaError(path, "no such file")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(path, f"not a readable media file ({_reason(e)})") from None


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    if not container.streams.video:
        raise MediaError(path, "no video stream")
    return container.streams.video[0]


def probe_video(path: Path) -> VideoMeta:
    """Container-level facts (fps, size, frame count, audio) for the manifest, without decoding frames."""
    path = Path(path)
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise MediaError(path, "video stream has no frame rate")
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise MediaError(path, "video stream has no frame size")
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        return VideoMeta(
            video_id=path.stem,
            path=path,
            fps=float(rate),
            n_frames=int(stream.frames) or None,
            width=int(ctx.width),
            height=int(ctx.height),
            has_audio=bool(container.streams.audio),
            duration=duration,
        )
    finally:
        container.close()


def frames_per_batch(path: Path, frame_bytes: int, batch_size: int, max_bytes: int | None) -> int:
    """Frames of `frame_bytes` each in one batch: at most `batch_size`, and at most `max_bytes` together (at least one;
    a single frame over `max_bytes` is a MediaError naming the file)."""
    if max_bytes is None:
        return batch_size
    if frame_bytes > max_bytes:
        raise MediaError(path, f"one decoded frame takes {frame_bytes / 2**20:,.0f} MiB, more than a decode batch may "
                               f"hold ({max_bytes / 2**20:,.0f} MiB); raise --decode-memory-mb")
    return max(1, min(batch_size, max_bytes // frame_bytes))


AUTO_THREADS = min(16, (os.cpu_count() or 1) + 1)  # FFmpeg's own choice for thread_count=0


def decoder_threads(ctx: av.codec.context.CodecContext, threads: int, max_bytes: int | None) -> int:
    """FFmpeg decoder threads: `threads`, or where that is 0 (auto) and a byte budget is given, at most as many as
    RGB frames of this size fit in one batch's share. Each frame thread holds a decoded frame of its own outside
    the decode batches, so at 8K (95 MiB a frame) auto threads alone would exceed a batch's share; frame sizes of
    4K and below keep FFmpeg's choice under the default budget."""
    if threads or max_bytes is None:
        return int(threads)
    fit = int(max_bytes) // max(1, 3 * int(ctx.width or 0) * int(ctx.height or 0))
    return 0 if fit >= AUTO_THREADS else max(1, fit)


def iter_video_frames(
    path: Path, batch_size: int = 64, threads: int = 0, thread_type: str = "AUTO", max_bytes: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (frames uint8 [B,H,W,3] RGB, timestamps float64 [B] s) lazily; timestamps are pts * time_base.

    `threads=0` lets FFmpeg pick the thread count (fewer where `max_bytes` cannot hold that many frames:
    `decoder_threads`); `thread_type` is FFmpeg's AUTO, FRAME, SLICE or NONE.
    Memory stays at one batch whatever the video length; with `max_bytes` a batch also holds at most that many
    bytes (it shrinks with the frame size: 4K frames come a few at a time).
    """
    path = Path(path)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        stream.thread_type = thread_type
        stream.codec_context.thread_count = decoder_threads(stream.codec_context, threads, max_bytes)
        fps = float(stream.average_rate or stream.guessed_rate or 30)
        buf: np.ndarray | None = None
        times = np.empty(batch_size, np.float64)
        n_in_buf = 0
        cap = batch_size
        n_done = 0
        failure: BaseException | None = None
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except (av.FFmpegError, OSError) as e:
                failure = e
                break
            img = frame.to_ndarray(format="rgb24")
            if buf is not None and buf.shape[1:3] != img.shape[:2]:
                yield buf[:n_in_buf], times[:n_in_buf]
                n_done += n_in_buf
                buf, times, n_in_buf = None, np.empty(batch_size, np.float64), 0
            if buf is None:
                cap = frames_per_batch(path, img.nbytes, batch_size, max_bytes)
                buf = np.empty((cap, *img.shape), np.uint8)
            buf[n_in_buf] = img
            times[n_in_buf] = float(frame.time) if frame.pts is not None else (n_done + n_in_buf) / fps
            n_in_buf += 1
            if n_in_buf == cap:
                yield buf, times[:cap]
                n_done += n_in_buf
                buf, times, n_in_buf = None, np.empty(batch_size, np.float64), 0
        if n_in_buf:
            yield buf[:n_in_buf], times[:n_in_buf]
            n_done += n_in_buf
        if failure is not None:
            if n_done == 0:
                raise MediaError(path, f"no frame could be decoded ({_reason(failure)})")
            raise MediaError(path, f"decoding failed after {n_done} frames: {_reason(failure)}")
        if n_done == 0:
            raise MediaError(path, "video stream holds no decodable frame")
        declared = int(stream.frames)
        if declared and n_done < declared - max(2, declared // 100):
            raise MediaError(
                path, f"decoding failed after {n_done} frames: stream ended early, the container declares {declared}"
            )
    finally:
        container.close()


def count_frames(path: Path) -> int:
    """Exact number of decodable frames (a full decode pass without colour conversion)."""
    path = Path(path)
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        n = 0
        try:
            for _ in container.decode(stream):
                n += 1
        except (av.FFmpegError, OSError) as e:
            raise MediaError(path, f"decoding failed after {n} frames: {_reason(e)}") from None
        return n
    finally:
        container.close()


def iter_audio(path: Path, sample_rate: int = 16000) -> Iterator[np.ndarray]:
    """The first audio stream as float32 mono chunks in [-1, 1] at `sample_rate`, decoded lazily (a live stream reads
    only as far as its frames' times), sample 0 at the container's t=0: a late stream is padded with leading
    silence, an early one trimmed, and the track cut at the stream's declared end. Concatenated, the chunks are
    `read_audio`. NoAudioError without an audio stream, MediaError for corrupt audio or no sample at all."""
    path = Path(path)
    container = _open(path)
    try:
        if not container.streams.audio:
            raise NoAudioError(path, "no audio stream")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        end = None
        if stream.duration is not None and stream.time_base is not None:
            end = round(float(((stream.start_time or 0) + stream.duration) * stream.time_base) * sample_rate)
            end = end if end > 0 else None
        sent, skip, started = 0, 0, False

        def out(chunk: np.ndarray) -> np.ndarray:
            nonlocal sent, skip
            if skip:
                cut = min(skip, len(chunk))
                chunk, skip = chunk[cut:], skip - cut
            if end is not None:
                chunk = chunk[:max(0, end - sent)]
            sent += len(chunk)
            return np.clip(chunk, -1.0, 1.0)

        try:
            for frame in container.decode(stream):
                if not started:
                    started = True
                    shift = int(round((float(frame.time) if frame.pts is not None else 0.0) * sample_rate))
                    if shift > 0:
                        yield out(np.zeros(shift, np.float32))
                    skip = max(0, -shift)
                for o in resampler.resample(frame):
                    chunk = out(o.to_ndarray().reshape(-1).astype(np.float32, copy=False))
                    if len(chunk):
                        yield chunk
            for o in resampler.resample(None):
                chunk = out(o.to_ndarray().reshape(-1).astype(np.float32, copy=False))
                if len(chunk):
                    yield chunk
        except (av.FFmpegError, OSError, ValueError) as e:
            raise MediaError(path, f"audio decoding failed: {_reason(e)}") from None
        if sent == 0:
            raise MediaError(path, "audio stream holds no decodable sample")
    finally:
        container.close()


def read_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    """The first audio stream as float32 mono in [-1, 1] at `sample_rate`, sample 0 at the container's t=0.

    A stream that starts late is padded with leading silence and one that starts early is trimmed, so
    sample k lines up with video timestamp k / sample_rate (see `iter_audio`, whose chunks these are).
    """
    return np.concatenate(list(iter_audio(path, sample_rate))).astype(np.float32, copy=False)
