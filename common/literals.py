"""The one reading of inline option text shared by part specs (`tcn(levels=3)`), loss sums and backbone specs
(`wavlm:x(layer=6)`): Python/TOML-ish literals and top-level splitting that respects brackets."""
from __future__ import annotations

import ast
from typing import Any

WORDS = {"true": True, "false": False, "none": None, "null": None}


def literal(text: str) -> Any:
    """`3` -> 3, `true` -> True, `[1, 2]` -> [1, 2]; anything that is not a literal stays the (stripped) string."""
    t = text.strip()
    if t.lower() in WORDS:
        return WORDS[t.lower()]
    try:
        return ast.literal_eval(t)
    except (ValueError, SyntaxError):
        return t


def split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` outside brackets, dropping empty parts; with `+`, the sign of an exponent (`1e+3`) is no split."""
    out, depth, cur = [], 0, ""
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        exp = sep == "+" and i > 1 and text[i - 1] in "eE" and text[i - 2].isdigit()
        if ch == sep and depth == 0 and not exp:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [s.strip() for s in out + [cur] if s.strip()]
