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
