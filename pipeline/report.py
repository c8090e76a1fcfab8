"""Console side of extraction: a rich progress bar (videos, frames/s, ETA) and the end-of-run summary."""
from __future__ import annotations

from collections import Counter
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from affcli.common.progress import progress_bar
from affcli.pipeline.config import VideoResult


class ExtractProgress:
    """Context manager whose `__call__(event, info)` is the Extractor's progress callback."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = progress_bar(console=self.console)
        self.videos = self.frames = None

    def __enter__(self) -> "ExtractProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, et: type | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.__exit__(et, ev, tb)

    def __call__(self, event: str, info: dict) -> None:
        if event == "start":
            self.videos = self.progress.add_task("videos", total=info["videos"])
            self.frames = self.progress.add_task("frames", total=info["frames"] or None)
        elif event == "frames" and self.frames is not None:
            self.progress.advance(self.frames, info["n"])
            t = self.progress.tasks[self.frames]
            if t.speed:
                self.progress.update(self.frames, info=f"{t.speed:,.0f} frames/s")
        elif event == "video" and self.videos is not None:
            self.progress.advance(self.videos)
            if info["status"] != "ok" or info.get("message"):
                self.console.print(f"[{'red' if info['status'] == 'failed' else 'yellow'}]{escape(info['video'])}: "
                                   f"{info['status']}[/] {escape(info.get('message', ''))}", markup=True,
                                   highlight=False, soft_wrap=True)
        elif event == "refused":
            self.console.print(f"[red]error[/]: {escape(info['message'])}", highlight=False, soft_wrap=True)


def print_summary(results: list[VideoResult], console: Console | None = None) -> Counter:
    """Print videos ok / skipped / failed with reasons; returns the counts."""
    console = console or Console()
    counts = Counter(r.status for r in results)
    elsewhere = f", {counts['done-elsewhere']} done by another run" if counts["done-elsewhere"] else ""
    table = Table(title=f"extract: {counts['ok']} ok, {counts['skipped']} skipped{elsewhere}, {counts['failed']} failed")
    for col in ("video", "status", "frames", "note"):
        table.add_column(col)
    for r in results:
        style = {"ok": "green", "skipped": "dim", "failed": "red"}.get(r.status, "cyan")
        table.add_row(escape(r.video_id), f"[{style}]{r.status}[/]", str(r.n_frames or ""), escape(r.message))
    console.print(table)
    return counts
