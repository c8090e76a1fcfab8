"""Id lists as users give them (`--videos a,b` or a file of ids), parsed in one place for every command."""
from __future__ import annotations

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
