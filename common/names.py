"""Names are data, never paths: the one check for every file or folder name built from a video id, run name,
feature-set name or prompt-set name."""
from __future__ import annotations

MAX_NAME = 200


def safe_name(name: str, what: str = "name") -> str:
    """`name` unchanged if it is one plain path component; else ValueError naming `what` and the problem.

    Refused: empty, `.`/`..`, path separators (`/`, `\\`), a drive or absolute path, NUL or other control
    characters, and names over MAX_NAME characters (file systems cap a component at 255 bytes).
    """
    text = str(name)
    problem = None
    if not text.strip():
        problem = "is empty"
    elif text in (".", "..") or text.strip(". ") == "":
        problem = "is a relative path"
    elif "/" in text or "\\" in text:
        problem = "holds a path separator"
    elif len(text) > 1 and text[1] == ":" and text[0].isalpha():
        problem = "is a drive path"
    elif any(ord(c) < 32 or ord(c) == 127 for c in text):
        problem = "holds a control character"
    elif len(text.encode("utf-8", "surrogatepass")) > MAX_NAME:
        problem = f"is longer than {MAX_NAME} bytes"
    if problem:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise ValueError(f"{what} {shown!r} {problem}: it cannot name a file")
    return text
