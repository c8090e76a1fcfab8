"""Id lists as users give them (`--videos a,b` or a file of ids), parsed in one place for every command."""
from __future__ import annotations

import unicodedata
from pathlib import Path


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:
        return False


def parse_id_list(ids: list[str] | str | Path) -> list[str]:
    """Ids, in order and without repeats, from a comma list, a list (items may hold commas) or a text file
    (one per line or comma separated, `#` comments). A Path that is not a file is a ValueError."""
    if isinstance(ids, Path) or (isinstance(ids, str) and _is_file(ids)):
        path = Path(ids)
        if not path.is_file():
            raise ValueError(f"id list {path} is not a file")
        lines = [line.split("#", 1)[0] for line in path.read_text().splitlines()]
    else:
        lines = [ids] if isinstance(ids, str) else [str(v) for v in ids]
    items = (item.strip() for line in lines for item in line.split(","))
    return list(dict.fromkeys(i for i in items if i))


def id_problem(video_id: str) -> str | None:
    """What makes a string unusable as a video id in the files ids are written to (None: fine): empty, surrounding
    whitespace, or a control character or line break (any character `str.splitlines` splits at), which would break a
    line-based file such as the ABAW single-file predictions that `score` reads back."""
    text = str(video_id)
    if not text:
        return "is empty"
    if text != text.strip():
        return "has leading or trailing whitespace"
    for c in text:
        if unicodedata.category(c) in ("Cc", "Zl", "Zp") or len(("a" + c + "a").splitlines()) > 1:
            return f"holds the control character {c!r}"
    return None


def check_id(video_id: str, what: str = "video id") -> str:
    """`video_id` unchanged, or a one-line ValueError naming what is wrong with it (id_problem)."""
    problem = id_problem(video_id)
    if problem is not None:
        shown = repr(video_id) if len(repr(video_id)) <= 60 else repr(video_id)[:57] + "..."
        raise ValueError(f"{what} {shown} {problem}")
    return video_id
