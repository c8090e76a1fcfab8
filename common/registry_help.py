"""Listings of registered parts for `--help`, read from the parts' source while their modules are not imported.

`--help` must answer without torch (the parts' modules import it), so while a part module is not loaded its
listing is read from the module's source: every `@REG.register("name", help=...)` class (`__init__`) or function,
options from the signature after the registry's `supplied` parameters, and every `Task("name", "help", ...)`
record. Once the module is loaded the live registry is listed (parts registered at run time included).
tests/test_cli_startup.py checks the source reading against the live registries.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from typing import Any

from affcli.common.registry import Registry


def options_help(reg: Registry, name: str) -> str:
    """'a=1, b=None, c' from the part's signature (an option without a default is required)."""
    return ", ".join(k if p.default is p.empty else f"{k}={p.default!r}" for k, p in reg.options(name).items())


def names_help(reg: Registry, with_options: bool = True) -> str:
    """'name(option=default, ...): help; ...' for every registered name."""
    parts = []
    for n in reg.names():
        meta, opts = reg.meta(n), options_help(reg, n) if with_options else ""
        parts.append(_entry(n, opts, meta.get("help")))
    return "; ".join(parts)


def _entry(name: str, opts: str, help_text: str | None) -> str:
    return name + (f"({opts})" if opts else "") + (f": {help_text}" if help_text else "")


class SourceUnreadable(ValueError):
    """A registration the source reader cannot follow (the live registry is listed instead)."""


def _literal(node: ast.AST, consts: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name) and node.id in consts:
        return consts[node.id]
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise SourceUnreadable(f"not a literal: {ast.unparse(node)}") from None


def _shown(node: ast.expr, consts: dict[str, Any]) -> str:
    """A default as `repr(value)` shows it (what the live listing prints)."""
    try:
        return repr(_literal(node, consts))
    except SourceUnreadable:
        return ast.unparse(node)


def _signature(fn: ast.FunctionDef, skip: int, consts: dict[str, Any]) -> str:
    a = fn.args
    if a.vararg or a.kwarg:
        raise SourceUnreadable(f"{fn.name}: *args/**kwargs")
    pos = a.posonlyargs + a.args
    defaults: list[ast.expr | None] = [None] * (len(pos) - len(a.defaults)) + list(a.defaults)
    params = list(zip(pos, defaults)) + list(zip(a.kwonlyargs, a.kw_defaults))
    return ", ".join(p.arg if d is None else f"{p.arg}={_shown(d, consts)}" for p, d in params[skip:])


def _register_call(node: ast.expr, registry: str) -> ast.Call | None:
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == registry):
        return node
    return None


def _call_args(call: ast.Call, names: tuple[str, ...], consts: dict[str, Any]) -> dict[str, Any]:
    got = {n: _literal(a, consts) for n, a in zip(names, call.args)}
    got.update({k.arg: _literal(k.value, consts) for k in call.keywords if k.arg in names})
    return got


@functools.lru_cache(maxsize=None)
def source_listing(module: str, registry: str, with_options: bool = True) -> str:
    """The `names_help` line of `module.registry`, read from the module's source without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise SourceUnreadable(f"{module}: no source")
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), spec.origin)
    consts: dict[str, Any] = {}
    supplied: tuple[str, ...] | None = None
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) else None
        if not isinstance(target, ast.Name) or node.value is None:
            continue
        v = node.value
        if target.id == registry and isinstance(v, ast.Call) and getattr(v.func, "id", None) == "Registry":
            supplied = tuple(_call_args(v, ("kind", "supplied"), consts).get("supplied", ()))
        else:
            try:
                consts[target.id] = ast.literal_eval(v)
            except ValueError:
                pass
    if supplied is None:
        raise SourceUnreadable(f"{module}: no `{registry} = Registry(...)`")
    entries: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            for deco in node.decorator_list:
                call = _register_call(deco, registry)
                if call is None:
                    continue
                args = _call_args(call, ("name", "help"), consts)
                fn = node if isinstance(node, ast.FunctionDef) else next(
                    (b for b in node.body if isinstance(b, ast.FunctionDef) and b.name == "__init__"), None)
                if fn is None:
                    raise SourceUnreadable(f"{module}: {node.name} has no __init__ of its own")
                skip = len(supplied) + (isinstance(node, ast.ClassDef))
                opts = _signature(fn, skip, consts) if with_options else ""
                entries[args["name"]] = _entry(args["name"], opts, args.get("help"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Task":
            args = _call_args(node, ("name", "help"), consts)
            entries[args["name"]] = _entry(args["name"], "", args.get("help"))
    if not entries:
        raise SourceUnreadable(f"{module}: no registrations of {registry}")
    return "; ".join(entries[n] for n in sorted(entries))


def listing(module: str, registry: str, with_options: bool = True) -> str:
    """The live registry's listing once `module` is loaded, else the one read from its source (no import)."""
    if module not in sys.modules:
        try:
            return source_listing(module, registry, with_options)
        except (SourceUnreadable, OSError, SyntaxError, KeyError):
            pass
    return names_help(getattr(importlib.import_module(module), registry), with_options)
