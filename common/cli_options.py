"""Command-line options generated from a config dataclass: one typer option per field (type, default, help).

Fields carry their help in `metadata` (`option()` writes it); a nested dataclass field contributes its own fields.
`dataclass_options(Config)` decorates a command `def cmd(explicit..., **fields)` so typer sees one option per field.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from collections.abc import Callable
from typing import Any, Optional, TypeVar

T = TypeVar("T")

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, *, help: str, short: str | None = None, flag: str | None = None,
           shown: str | None = None) -> Any:
    """A dataclass field with CLI help; list/dict defaults are copied per instance; `flag` renames the option,
    `shown` is how --help names the default when the value alone would not say it (e.g. 'all in the cache')."""
    meta = {"help": help, "short": short, "flag": flag, "shown": shown}
    meta = {k: v for k, v in meta.items() if v is not None}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class FieldOption:
    """One generated option: the field's (dotted) path, base type, default and typer parameter."""

    name: str
    path: tuple[str, ...]
    kind: Any
    default: Any
    param: inspect.Parameter


def _base(tp: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def _shown(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v)) if v else "none"
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items()) or "none"
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def field_options(cls: type, *, overrides: bool, help_for: dict[str, str] | None = None,
                  _path: tuple[str, ...] = ()) -> list[FieldOption]:
    """Options for every field of `cls` (nested dataclasses flattened). With `overrides` every option defaults to
    None (unset: the config file's or the dataclass's value stands) and its help names the dataclass default."""
    import typer

    hints = typing.get_type_hints(cls)
    out: list[FieldOption] = []
    for f in dataclasses.fields(cls):
        tp = _base(hints[f.name])
        if dataclasses.is_dataclass(tp):
            out += field_options(tp, overrides=overrides, help_for=help_for, _path=(*_path, f.name))
            continue
        if "help" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name}: no help in the field's metadata (use option(..., help=...))")
        default = _default_of(f)
        shown = f.metadata.get("shown") or _shown(default)
        origin = typing.get_origin(tp) or tp
        if origin is dict:
            cli_tp, cli_default = list[str], [f"{k}={json.dumps(v)}" for k, v in (default or {}).items()]
        elif origin in (list, tuple):
            item = (typing.get_args(tp) or (str,))[0]
            cli_tp, cli_default = list[item], default if default is _MISSING else list(default or [])
        else:
            cli_tp, cli_default = tp, default
        help_text = (help_for or {}).get(f.name, f.metadata["help"])
        if origin is dict:
            help_text += " As key=value, repeatable."
        elif origin in (list, tuple):
            help_text += " Repeatable."
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        decls = [f"{flag}/--no-{flag[2:]}"] if tp is bool else [flag]
        if f.metadata.get("short"):
            decls.append(f.metadata["short"])
        if default is _MISSING:
            opt = typer.Option(..., *decls, help=help_text)
        elif overrides:
            cli_tp = Optional[cli_tp]
            opt = typer.Option(None, *decls, help=f"{help_text} (default: {shown})", show_default=False)
        else:
            opt = typer.Option(cli_default, *decls, help=help_text,
                               show_default=shown if origin in (dict, list, tuple) or "shown" in f.metadata else True)
        param = inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=cli_tp)
        out.append(FieldOption(f.name, (*_path, f.name), origin, default, param))
    names = [o.name for o in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise TypeError(f"{cls.__name__}: field names {sorted(dup)} appear twice once nested fields are flattened")
    return out


def parse_key_values(items: list[str] | tuple[str, ...] | None, what: str = "option") -> dict[str, Any]:
    """['levels=3', 'causal=true', 'name=x'] -> {'levels': 3, 'causal': True, 'name': 'x'} (JSON values where they parse)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} {item!r}: expected key=value")
        key, val = item.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(val)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = val
    return out


def dataclass_options(cls: type, *, overrides: bool,
                      help_for: dict[str, str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate `def cmd(explicit params..., **fields)`: typer sees the explicit parameters plus one option per
    field of `cls`; `cmd` receives the fields as flat keyword arguments (dict fields parsed from key=value;
    with `overrides`, only the options given). A bad key=value is a one-line error naming the option."""
    opts = field_options(cls, overrides=overrides, help_for=help_for)
    by_name = {o.name: o for o in opts}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        explicit = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        clash = [p.name for p in explicit if p.name in by_name]
        if clash:
            raise TypeError(f"{fn.__name__}: parameter {clash[0]!r} is also a {cls.__name__} field")

        def command(**kw: Any) -> Any:
            from affcli.common.commands import fail

            fixed = {p.name: kw.pop(p.name) for p in explicit}
            fields: dict[str, Any] = {}
            for name, v in kw.items():
                o = by_name[name]
                if overrides and (v is None or (o.kind in (list, tuple, dict) and not v)):
                    continue
                try:
                    fields[name] = parse_key_values(v, o.param.default.param_decls[0]) if o.kind is dict else (
                        list(v) if o.kind in (list, tuple) else v)
                except ValueError as e:
                    fail(str(e))
            return fn(**fixed, **fields)

        command.__name__, command.__qualname__ = fn.__name__, fn.__qualname__
        command.__doc__, command.__module__ = fn.__doc__, fn.__module__
        command.__signature__ = inspect.Signature([*explicit, *(o.param for o in opts)])  # type: ignore[attr-defined]
        command.field_options = opts  # type: ignore[attr-defined]
        return command

    return wrap


def build_options(cls: type[T], fields: dict[str, Any]) -> T:
    """`cls` from the flat keyword arguments a `dataclass_options` command receives (nested dataclass fields, such
    as a command's ClusterOptions, are rebuilt from their own fields; absent keys keep their defaults)."""
    hints = typing.get_type_hints(cls)
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = _base(hints[f.name])
        if dataclasses.is_dataclass(tp):
            kw[f.name] = build_options(tp, fields)
        elif f.name in fields:
            kw[f.name] = fields[f.name]
    return cls(**kw)
