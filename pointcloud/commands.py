"""Thin entry points behind `affcli pc ...`: each loads, runs one job and returns what the CLI prints."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from affcli.common.progress import progress_bar
from affcli.common.threads import configure_threads
from affcli.pointcloud.chunked import upsample_large
from affcli.pointcloud.io import read_cloud, write_cloud
from affcli.pointcloud.runtime import resolve_device
from affcli.pointcloud.upsample import Merge, default_batch, load_upsampler

DEFAULT_MAX_MEMORY_MIB = 2048


def upsample_file(
    run: Path | None,
    inp: Path,
    ratio: int,
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
    before/after PNG beside the output."""
    dev = resolve_device(device)
    n_threads = configure_threads(threads)
    model = load_upsampler(run, dev)
    xyz = read_cloud(inp)
    t = time.perf_counter()
    with progress_bar("chunks", transient=True) as bar:
        task = bar.add_task(f"x{ratio} {inp.name}", total=None, info="")

        def report(p: int, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, info=f"pass {p + 1}")

        up = upsample_large(model, xyz, ratio, max_memory, batch or default_batch(dev), merge, report)
    sec = time.perf_counter() - t
    write_cloud(out, up)
    info: dict[str, Any] = {"input_points": len(xyz), "output_points": len(up), "seconds": sec, "out": str(out),
                            "threads": n_threads}
    if render:
        from affcli.pointcloud.render import render_before_after

        info["render"] = str(render_before_after(xyz, up, out.with_suffix(".png"), f"{inp.name} x{ratio}"))
    return info
