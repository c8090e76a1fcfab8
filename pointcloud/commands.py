"""Thin entry points behind `affcli pc ...`: each loads, runs one job and returns what the CLI prints."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from affcli.pointcloud.checkpoint import load_model
from affcli.pointcloud.io import read_cloud, write_cloud
from affcli.pointcloud.runtime import resolve_device
from affcli.pointcloud.upsample import Merge, default_batch, upsample_cloud


def upsample_file(
    run: Path,
    inp: Path,
    ratio: int,
    out: Path,
    device: str = "auto",
    batch: int | None = None,
    merge: Merge = "auto",
    render: bool = False,
) -> dict[str, Any]:
    """Upsample one cloud file with a trained run; optional before/after PNG beside the output."""
    dev = resolve_device(device)
    model = load_model(run, dev)
    xyz = read_cloud(inp)
    t = time.perf_counter()
    up = upsample_cloud(model, xyz, ratio, batch or default_batch(dev), merge)
    sec = time.perf_counter() - t
    write_cloud(out, up)
    info: dict[str, Any] = {"input_points": len(xyz), "output_points": len(up), "seconds": sec, "out": str(out)}
    if render:
        from affcli.pointcloud.render import render_before_after

        info["render"] = str(render_before_after(xyz, up, out.with_suffix(".png"), f"{inp.name} x{ratio}"))
    return info
