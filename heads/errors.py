"""Errors of stage-2 label and prediction files: one line naming the file and the problem."""
from __future__ import annotations

from pathlib import Path


class LabelError(ValueError):
    """A label or prediction file that cannot be used; str is `<path>: <message>`."""

    def __init__(self, path: str | Path, message: str):
        self.path, self.message = str(path), message
        super().__init__(f"{path}: {message}")

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"
