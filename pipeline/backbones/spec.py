"""Backbone spec strings: `kind:name` with optional trailing options, `wavlm:microsoft/wavlm-large(layer=6)`.

The whole string (options included) names the feature set in the cache, so two layers of one model are two feature
sets; the options are the kind's keyword parameters (checked by the registry like any part's options). Torch-free.
"""
from __future__ import annotations

from typing import Any

from affcli.common.literals import literal, split_top


class SpecSyntaxError(ValueError):
    """A spec whose trailing `(key=value, ...)` cannot be read."""


def _items(body: str, spec: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in split_top(body, ","):
        key, eq, val = p.partition("=")
        if not eq or not key.strip().isidentifier():
            raise SpecSyntaxError(f"{spec}: option {p!r} is not key=value; write kind:name(key=value, ...)")
        out[key.strip()] = literal(val)
    return out


def split_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """`"wavlm:microsoft/wavlm-large(layer=6)"` -> `("wavlm", "microsoft/wavlm-large", {"layer": 6})`.

    Options are a balanced `(...)` group at the very end whose items are `key=value`; a name without one is
    returned whole (`clip:local-dir:/x/y`)."""
    spec = str(spec)
    kind, _, rest = spec.partition(":")
    if not rest.endswith(")"):
        return kind, rest, {}
    depth = 0
    for i in range(len(rest) - 1, -1, -1):
        depth += rest[i] == ")"
        depth -= rest[i] == "("
        if depth == 0:
            break
    else:
        raise SpecSyntaxError(f"{spec}: unbalanced parentheses in the options")
    body = rest[i + 1:-1]
    if "=" not in body and body.strip():
        return kind, rest, {}  # a name that merely ends in ')', e.g. a folder called "model (v2)"
    return kind, rest[:i], _items(body, spec)


def spec_name(spec: str) -> str:
    """The name part of a spec, without its kind and options."""
    return split_spec(spec)[1]
