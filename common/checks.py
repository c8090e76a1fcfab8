"""Typed option values, checked in one place: a part's or config field's type annotation (with `Range` / `Device`
metadata in `typing.Annotated`) is its check, so the CLI, run configs, grids and pretraining give one verdict.

    def __init__(self, d_in: int, levels: Annotated[int, Range(1, 16)] = 3, dropout: Dropout = 0.1): ...

`value_problem(value, annotation)` says what is wrong with a value (None when it fits), `check_fields(obj)` checks
every annotated field of a config dataclass, `device_problem(text)` is the one (torch-free) device-string check.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any


@dataclass(frozen=True)
class Range:
    """Numeric bounds of an option: lo <= v <= hi (`lo_open` / `hi_open` make a bound strict; None: unbounded)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def problem(self, value: Any) -> str | None:
        """What is wrong with a number against these bounds (None: inside)."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return f"must be {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return f"must be {'<' if self.hi_open else '<='} {self.hi:g}"
        return None


@dataclass(frozen=True)
class Device:
    """Marks a string option as a device (auto, cpu, cuda, cuda:N, mps), checked by `device_problem`."""

    def problem(self, value: Any) -> str | None:
        return device_problem(value) if isinstance(value, str) else None


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
MAX_WIDTH = 1 << 16
Width = Annotated[int, Range(1, MAX_WIDTH)]
"""A layer width (hidden units, channels, model dim)."""
Layers = Annotated[int, Range(1, 64)]
"""A layer count: 0 would silently build no layer."""
Heads = Annotated[int, Range(1, 256)]
"""Attention heads."""
Dropout = Annotated[float, Range(0, 1, hi_open=True)]
"""A dropout probability, 0 <= p < 1."""
Fraction = Annotated[float, Range(0, 1)]
"""A probability or fraction in [0, 1]."""
PositiveFloat = Annotated[float, Range(0, lo_open=True)]
"""A strictly positive real (temperatures, scales, learning rates)."""
NonNegativeFloat = Annotated[float, Range(0)]
PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
DeviceName = Annotated[str, Device()]


def device_problem(text: Any) -> str | None:
    """What is wrong with a device string (None: auto, cpu, mps, cuda or cuda:N)."""
    if not isinstance(text, str) or not _DEVICE.match(text):
        return "is not a device (auto, cpu, cuda, cuda:N, mps)"
    return None


def check_device(text: Any, what: str = "device") -> str:
    """`text` unchanged if it names a device, else a one-line ValueError (torch-free: every config uses it)."""
    p = device_problem(text)
    if p is not None:
        raise ValueError(f"{what} {text!r} {p}")
    return text


def _shown(value: Any) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, getattr(
        tp, "__name__", str(tp)))


def value_problem(value: Any, annotation: Any) -> str | None:
    """What is wrong with `value` for a parameter annotated `annotation` (None: fits, or nothing is declared).

    Checks the type (int, float, bool, str, Literal choices, unions, list/dict) and `Range`/`Device` metadata of
    `Annotated`; an unknown annotation (Any, a class, a string that could not be evaluated) accepts anything."""
    if annotation is None or annotation is typing.Any or isinstance(annotation, str):
        return None
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *meta = typing.get_args(annotation)
        p = value_problem(value, base)
        if p is not None:
            return p
        for m in meta:
            check = getattr(m, "problem", None)
            if callable(check) and (p := check(value)) is not None:
                return p
        return None
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        problems = [value_problem(value, a) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        return None if value in choices and type(value) in {type(c) for c in choices} else \
            f"must be one of {', '.join(map(repr, choices))}"
    if annotation is type(None):
        return None if value is None else "must be none"
    if annotation is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if annotation is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if annotation is str:  # a path object is a fine string option (cache, labels, out)
        return None if isinstance(value, (str, os.PathLike)) else "must be a string"
    if origin in (list, tuple, dict, set):
        if not (isinstance(value, origin) or (origin in (list, tuple) and isinstance(value, (list, tuple)))):
            return f"must be a {origin.__name__}"  # a tuple option arrives as a list from JSON/TOML: same thing
        args = typing.get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return f"must hold {len(args)} values"
            for item, arg in zip(value, args):
                if (p := value_problem(item, arg)) is not None:
                    return f"holds {_shown(item)}, which {p}"
            return None
        if origin is tuple and args:
            args = args[:1]
        if origin in (list, set, tuple) and args:
            for item in value:
                if (p := value_problem(item, args[0])) is not None:
                    return f"holds {_shown(item)}, which {p}"
        return None
    return None


def option_problem(name: str, value: Any, annotation: Any) -> str | None:
    """`<name>=<value> <problem>` for a value that does not fit its annotation, else None."""
    p = value_problem(value, annotation)
    return None if p is None else f"{name}={_shown(value)} {p}"


def type_hints(obj: Any) -> dict[str, Any]:
    """The evaluated annotations (Annotated metadata kept) of a function, a class's __init__ or a dataclass; a
    parameter whose annotation cannot be evaluated (a name imported only for type checkers) keeps its string."""
    target = obj
    if isinstance(obj, type) and not dataclasses.is_dataclass(obj):
        target = obj.__init__
    elif not isinstance(obj, type) and not inspect.isfunction(obj) and callable(obj):
        target = type(obj).__call__
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # one unresolvable name: evaluate the others one by one
        pass
    raw = getattr(target, "__annotations__", {}) or {}
    glob = getattr(target, "__globals__", None) or vars(__import__(getattr(obj, "__module__", "builtins")))
    out: dict[str, Any] = {}
    for k, v in raw.items():
        one = types.SimpleNamespace(__annotations__={k: v})
        try:
            out[k] = typing.get_type_hints(one, globalns=glob, include_extras=True)[k]
        except Exception:
            out[k] = v
    return out


def check_fields(obj: Any, what: str = "") -> None:
    """ValueError naming the first field of a dataclass instance whose value does not fit its annotation."""
    hints = type_hints(type(obj))
    for f in dataclasses.fields(obj):
        p = option_problem(f.name, getattr(obj, f.name), hints.get(f.name))
        if p is not None:
            raise ValueError(f"{what}{p}")


def check_unique(values: list[Any], what: str) -> None:
    """ValueError naming the first repeated value of a list option (a feature set or backbone given twice)."""
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what}: {v!r} is given twice")
        seen.add(v)
