"""Thin entry points behind `affcli pc ...`: each loads, runs one job and returns what the CLI prints."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from affcli.common.progress import progress_bar
from affcli.common.threads import configure_threads
from affcli.pointcloud.chunked import upsample_large
from affcli.pointcloud.io import read_cloud, write_cloud
from affcli.pointcloud.runtime import resolve_device
from affcli.pointcloud.upsample import Merge, check_ratio, default_batch, load_upsampler

DEFAULT_MAX_MEMORY_MIB = 2048


LOG_EVERY_S = 10.0


class ProgressLog:
    """Progress lines for logs (stderr not a terminal, where the bar does not show): `progress: <what> pass p: chunk
    d/t, s elapsed` at most every LOG_EVERY_S seconds, so short runs print none."""

    def __init__(self, what: str, start: float, every: float = LOG_EVERY_S, stream=None) -> None:
        self.what, self.start, self.every, self.stream = what, start, every, stream or sys.stderr
        self.last = start
        self.on = not self.stream.isatty()

    def __call__(self, p: int, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.on and now - self.last >= self.every:
            self.last = now
            self.stream.write(f"progress: {self.what} pass {p + 1}: chunk {done}/{total}, "
                              f"{now - self.start:.0f} s elapsed\n")
            self.stream.flush()


def upsample_file(
    run: Path | None,
    inp: Path,
    ratio: float | str,
    out: Path,
    device: str = "auto",
    batch: int | None = None,
    merge: Merge = "auto",
    render: bool = False,
    max_memory: float = DEFAULT_MAX_MEMORY_MIB,
    threads: int | None = None,
) -> dict[str, Any]:
    """Upsample one cloud file with a trained run (None: the shipped default model) within `max_memory` MiB of
    working memory (in chunks when needed, progress shown); torch threads as the process may use; optional
    before/after PNG beside the output. Any ratio > 1 (x2.5, x6: exactly round(ratio N) points)."""
    ratio = check_ratio(ratio)
    dev = resolve_device(device)
    n_threads = configure_threads(threads)
    model = load_upsampler(run, dev)
    xyz = read_cloud(inp)
    t = time.perf_counter()
    with progress_bar("chunks", transient=True) as bar:
        task = bar.add_task(f"x{ratio:g} {inp.name}", total=None, info="")

        log = ProgressLog(f"x{ratio:g} {inp.name}", t)

        def report(p: int, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, info=f"pass {p + 1}")
            log(p, done, total)

        up = upsample_large(model, xyz, ratio, max_memory, batch or default_batch(dev), merge, report, name=str(inp))
    sec = time.perf_counter() - t
    write_cloud(out, up)
    info: dict[str, Any] = {"input_points": len(xyz), "output_points": len(up), "seconds": sec, "out": str(out),
                            "threads": n_threads}
    if render:
        from affcli.pointcloud.render import render_before_after

        info["render"] = str(render_before_after(xyz, up, out.with_suffix(".png"), f"{inp.name} x{ratio:g}"))
    return info


def default_output(inp: Path, ratio: str | float) -> Path:
    """<input stem>_x<ratio>.xyz beside the input (the ratio as given, checked first)."""
    return inp.with_name(f"{inp.stem}_x{check_ratio(ratio):g}.xyz")


def evaluate_levels(noise: str | None, noise_seed: int = 0, **kwargs: Any) -> list[dict[str, Any]]:
    """`evaluate_run` once per input-noise level of `noise` ('0.01,0.02'; None: clean inputs only), each into its own
    folder; the levels are checked before any work starts."""
    from affcli.pointcloud.evaluate import evaluate_run
    from affcli.pointcloud.noise import parse_levels

    levels = [0.0] if noise is None else parse_levels(noise)
    check_ratio(kwargs.get("ratio", 4))
    out = kwargs.pop("out_dir", None)
    return [evaluate_run(**kwargs, noise=level, noise_seed=noise_seed,
                         out_dir=None if out is None else Path(out) / f"noise{level:g}" if len(levels) > 1 else out)
            for level in levels]
