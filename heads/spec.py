"""Parse part specs (`tcn(levels=3, causal=true)`, `none:visual`) and loss sums (`ce+0.1*text-contrastive`)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from affcli.common.literals import literal, split_top

_PART = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?::\s*([A-Za-z0-9_.\-]+))?\s*(?:\((.*)\))?\s*$", re.S)


class SpecError(ValueError):
    """A part or loss string that cannot be parsed."""


@dataclass(frozen=True)
class PartSpec:
    """A registered name, an optional `:arg` and keyword options."""

    name: str
    arg: str | None = None
    opts: dict[str, Any] = field(default_factory=dict)


def parse_part(text: str) -> PartSpec:
    """`name`, `name:arg` or `name(key=value, ...)` -> PartSpec."""
    m = _PART.match(str(text))
    if not m:
        raise SpecError(f"cannot parse {text!r}; write name, name:arg or name(key=value, ...)")
    opts: dict[str, Any] = {}
    for item in split_top(m.group(3) or "", ","):
        if "=" not in item:
            raise SpecError(f"option {item!r} of {text!r} is not key=value")
        k, v = item.split("=", 1)
        opts[k.strip()] = literal(v)
    return PartSpec(m.group(1), m.group(2), opts)


def parse_loss(text: str) -> list[tuple[float, PartSpec]]:
    """`ce+0.1*text-contrastive` -> [(1.0, ce), (0.1, text-contrastive)]."""
    terms = []
    for raw in split_top(str(text), "+"):
        m = re.match(r"^\s*([0-9.]+(?:[eE][+-]?[0-9]+)?)\s*\*(.*)$", raw, re.S)
        w, rest = (float(m.group(1)), m.group(2)) if m else (1.0, raw)
        terms.append((w, parse_part(rest)))
    if not terms:
        raise SpecError(f"empty loss {text!r}")
    return terms
