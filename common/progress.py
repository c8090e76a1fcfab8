"""The one rich progress bar of every stage: description, bar, count (+ unit), elapsed, ETA and a free `info` field."""
from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text


class _InfoColumn(ProgressColumn):
    """The task's `info` field (loss, rate, current file), empty when a task sets none."""

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("info", "")))


def progress_bar(unit: str = "", *, console: Console | None = None, transient: bool = False,
                 disable: bool = False) -> Progress:
    """A rich Progress with the house columns; `unit` (e.g. 'runs', 'epochs') follows the M/N count."""
    cols: list[ProgressColumn] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit:
        cols.append(TextColumn(unit))
    cols += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), _InfoColumn()]
    return Progress(*cols, console=console, transient=transient, disable=disable)
