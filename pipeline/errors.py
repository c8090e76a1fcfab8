"""Errors for bad input media: one line naming the file and the problem, so a batch run can log and go on."""

from __future__ import annotations

from pathlib import Path


class MediaError(Exception):
    """A file or folder that cannot be used as media; str() is `"<path>: <message>"` on one line."""

    def __init__(self, path: str | Path, message: str):
        self.path = Path(path)
        self.message = " ".join(str(message).split())
        super().__init__(f"{self.path}: {self.message}")

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.path, self.message))


class NoAudioError(MediaError):
    """The file decodes as video but has no audio stream."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run: the `written` videos are complete in the cache, the `left` ones are not (a resumed run
    redoes them). `line()` is the one line the command prints before exiting 130."""

    def __init__(self, what: str, written: int, left: list[str]):
        super().__init__(what)
        self.what, self.written, self.left = what, int(written), list(left)

    def line(self) -> str:
        left = ", ".join(self.left[:3]) + (f" and {len(self.left) - 3} more" if len(self.left) > 3 else "")
        return (f"{self.what} interrupted (Ctrl-C): {self.written} video{'s' if self.written != 1 else ''} written "
                f"complete" + (f"; not complete: {left}" if self.left else "")
                + "; run the same command again to resume")
