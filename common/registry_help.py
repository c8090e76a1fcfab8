"""Listings of registered parts for `--help`, read from the parts' source while their modules are not imported.

`--help` must answer without torch (the parts' modules import it), so while a part module is not loaded its
listing is read from the module's source: every `@REG.register("name", help=...)` class (`__init__`) or function,
options from the signature after the registry's `supplied` parameters, declared metadata (`fields`, e.g. a
backbone's modality), and every `Task("name", "help", ...)` record. A package spreads its parts over modules: its
`__init__` imports the registry (`from pkg.registry import REG`) and the part modules (`from pkg import a, b`),
and those modules are read (source files are found without running any package's `__init__`). Once the module is
loaded the live registry is listed (parts registered at run time included). tests/test_cli_startup.py checks the
source reading against the live registries.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

from affcli.common.registry import Registry


def options_help(reg: Registry, name: str) -> str:
    """'a=1, b=None, c' from the part's signature (an option without a default is required)."""
    return ", ".join(k if p.default is p.empty else f"{k}={p.default!r}" for k, p in reg.options(name).items())


def names_help(reg: Registry, with_options: bool = True, fields: tuple[str, ...] = ()) -> str:
    """'name(option=default, ...) (field, ...): help; ...' for every registered name (`fields`: metadata declared
    at registration, shown after the options; no square brackets, which --help's markup would swallow)."""
    parts = []
    for n in reg.names():
        meta, opts = reg.meta(n), options_help(reg, n) if with_options else ""
        parts.append(_entry(n, opts, meta.get("help"), _tags(meta, fields)))
    return "; ".join(parts)


FIELD_PREFIX = {"example": "e.g. "}


def _tags(meta: dict[str, Any], fields: tuple[str, ...]) -> str:
    """Declared metadata as shown: a true flag by its name, a false one as 'no name', a value as it is."""
    shown = []
    for f in fields:
        v = meta.get(f)
        if isinstance(v, bool):
            shown.append(f if v else f"no {f}")
        elif v is not None:
            shown.append(FIELD_PREFIX.get(f, "") + str(v))
    return ", ".join(shown)


def _entry(name: str, opts: str, help_text: str | None, tags: str = "") -> str:
    return (name + (f"({opts})" if opts else "") + (f" ({tags})" if tags else "")
            + (f": {help_text}" if help_text else ""))


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


def source_path(module: str) -> Path:
    """The source file of `module` (a package's `__init__.py`), found without importing it or its parents."""
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__file__", None):
        return Path(loaded.__file__)
    parent, _, name = module.rpartition(".")
    if not parent:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            raise SourceUnreadable(f"{module}: no source")
        return Path(spec.origin)
    folder = source_path(parent)
    if folder.name != "__init__.py":
        raise SourceUnreadable(f"{parent}: not a package")
    for cand in (folder.parent / f"{name}.py", folder.parent / name / "__init__.py"):
        if cand.is_file():
            return cand
    raise SourceUnreadable(f"{module}: no source")


def _parse(module: str) -> tuple[ast.Module, dict[str, Any]]:
    """The module's syntax tree and its module-level literal constants."""
    path = source_path(module)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    consts: dict[str, Any] = {}
    for node in tree.body:
        target = _assigned(node)
        if target is not None:
            try:
                consts[target] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return tree, consts


def _assigned(node: ast.stmt) -> str | None:
    target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
        node.target if isinstance(node, ast.AnnAssign) and node.value is not None else None
    return target.id if isinstance(target, ast.Name) else None


def _supplied(tree: ast.Module, registry: str, consts: dict[str, Any]) -> tuple[str, ...] | None:
    """The `supplied` parameters of `registry = Registry(...)` in this module, or None where it is not defined."""
    for node in tree.body:
        v = getattr(node, "value", None)
        if _assigned(node) == registry and isinstance(v, ast.Call) and getattr(v.func, "id", None) == "Registry":
            return tuple(_call_args(v, ("kind", "supplied"), consts).get("supplied", ()))
    return None


def _package_parts(module: str, tree: ast.Module, registry: str) -> tuple[str | None, list[str]]:
    """For a package: the module its `__init__` imports `registry` from, and the part modules it imports."""
    if source_path(module).name != "__init__.py":
        return None, []
    home, parts = None, []
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        names = [a.name for a in node.names]
        if registry in names and node.module.startswith(module + "."):
            home = node.module
        elif node.module == module:
            parts += [f"{module}.{n}" for n in names if _is_module(f"{module}.{n}")]
    return home, parts


def _is_module(module: str) -> bool:
    try:
        source_path(module)
    except SourceUnreadable:
        return False
    return True


@functools.lru_cache(maxsize=None)
def source_listing(module: str, registry: str, with_options: bool = True, fields: tuple[str, ...] = ()) -> str:
    """The `names_help` line of `module.registry`, read from the source of `module` (and, for a package, of the
    registry's module and the part modules its `__init__` imports) without importing any of them."""
    tree, consts = _parse(module)
    supplied = _supplied(tree, registry, consts)
    home, parts = _package_parts(module, tree, registry)
    if supplied is None and home is not None:
        home_tree, home_consts = _parse(home)
        supplied = _supplied(home_tree, registry, home_consts)
    if supplied is None:
        raise SourceUnreadable(f"{module}: no `{registry} = Registry(...)`")
    entries: dict[str, str] = {}
    for name in [module, *parts]:
        part_tree, part_consts = (tree, consts) if name == module else _parse(name)
        entries.update(_registrations(name, part_tree, part_consts, registry, supplied, with_options, fields))
    if not entries:
        raise SourceUnreadable(f"{module}: no registrations of {registry}")
    return "; ".join(entries[n] for n in sorted(entries))


def _registrations(module: str, tree: ast.Module, consts: dict[str, Any], registry: str, supplied: tuple[str, ...],
                   with_options: bool, fields: tuple[str, ...]) -> dict[str, str]:
    """name -> listing entry of every registration of `registry` (and every Task record) in one module."""
    entries: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            for deco in node.decorator_list:
                call = _register_call(deco, registry)
                if call is None:
                    continue
                args = _call_args(call, ("name", "help", *fields), consts)
                fn = node if isinstance(node, ast.FunctionDef) else next(
                    (b for b in node.body if isinstance(b, ast.FunctionDef) and b.name == "__init__"), None)
                if fn is None:
                    raise SourceUnreadable(f"{module}: {node.name} has no __init__ of its own")
                skip = len(supplied) + (isinstance(node, ast.ClassDef))
                opts = _signature(fn, skip, consts) if with_options else ""
                entries[args["name"]] = _entry(args["name"], opts, args.get("help"), _tags(args, fields))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Task":
            args = _call_args(node, ("name", "help"), consts)
            entries[args["name"]] = _entry(args["name"], "", args.get("help"))
    return entries


def listing(module: str, registry: str, with_options: bool = True, fields: tuple[str, ...] = ()) -> str:
    """The live registry's listing once `module` is loaded, else the one read from its source (no import)."""
    if module not in sys.modules:
        try:
            return source_listing(module, registry, with_options, tuple(fields))
        except (SourceUnreadable, OSError, SyntaxError, KeyError):
            pass
    return names_help(getattr(importlib.import_module(module), registry), with_options, tuple(fields))
