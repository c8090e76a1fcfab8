"""Before/after PNG renders of an upsampling (matplotlib 3D scatter, Agg backend, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def render_before_after(
    before: np.ndarray, after: np.ndarray, path: str | os.PathLike, title: str = "", extra: dict | None = None
) -> Path:
    """Side-by-side scatter of the input and the upsampled cloud(s) (extra: more label -> cloud panels); PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {f"input ({len(before)})": before, f"upsampled ({len(after)})": after}
    panels |= {f"{k} ({len(v)})": v for k, v in (extra or {}).items()}
    lo, hi = before.min(0), before.max(0)
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2
    fig = plt.figure(figsize=(4 * len(panels), 4.2), dpi=110)
    for i, (label, pts) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
        pts = np.asarray(pts)
        ax.scatter(
            pts[:, 0],
            pts[:, 2],
            pts[:, 1],
            s=max(0.05, 6.0 / np.sqrt(len(pts))),
            c=pts[:, 1],
            cmap="viridis",
            depthshade=False,
            linewidths=0,
        )
        for set_lim, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), (centre[0], centre[2], centre[1])):
            set_lim(c - half, c + half)
        ax.set_axis_off()
        ax.view_init(elev=20, azim=-60)
        ax.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
