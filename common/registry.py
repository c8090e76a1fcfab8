"""A name -> factory table, so backbones, heads, fusions and losses are picked by name, not if-chains.

A part's options are its factory's keyword parameters (the timm way): `Registry.options` reads them from the
signature, `Registry.check` is the one place that refuses an unknown or missing option or a value that does not fit
the option's annotation (type, and `Range` bounds declared with `typing.Annotated`: common.checks), `Registry.build`
checks and constructs. A rule between options (a GRU cannot be bidirectional and causal) is declared at registration,
`register(name, check=fn)`, with `fn(options with defaults) -> problem or None`. The leading parameters the framework
passes itself (`d_in`, `dims`, `ctx`, ...) are declared once per registry (`supplied=`) and are not options.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from affcli.common.checks import option_problem, type_hints

T = TypeVar("T")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_OPTION = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}; valid {kind} names: {', '.join(valid) or '(none)'}")

    def __str__(self) -> str:
        return self.args[0]


class OptionError(ValueError):
    """An option a registered part does not take (or a required one left out); the message lists the valid options."""

    def __init__(self, kind: str, name: str, option: str, valid: list[str], missing: bool = False):
        self.kind, self.name, self.option, self.valid = kind, name, option, valid
        self.problem = f"{kind} {name!r} " + (f"needs option {option!r}" if missing else f"takes no option {option!r}")
        super().__init__(f"{self.problem}; valid options: {', '.join(valid) or '(none)'}")


class OptionValueError(ValueError):
    """An option value of the wrong type or out of its declared range, or options that break the part's rule."""

    def __init__(self, kind: str, name: str, problem: str):
        self.kind, self.name = kind, name
        self.problem = f"{kind} {name!r}: {problem}"
        super().__init__(self.problem)


class Registry(Generic[T]):
    """A named table of factories of one kind; options come from each factory's signature.

    `supplied` names the leading positional parameters the framework passes to every factory (not options);
    `required` names options the framework always sets, so every registered factory must take them.
    """

    def __init__(self, kind: str, supplied: tuple[str, ...] = (), required: tuple[str, ...] = ()):
        self.kind, self.supplied, self.required = kind, tuple(supplied), tuple(required)
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._options: dict[str, dict[str, inspect.Parameter]] = {}
        self._hints: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: `@REG.register("tcn", help="...")` adds the decorated object under `name`."""
        if "options" in meta:
            raise ValueError(f"{self.kind} {name!r}: options come from the signature; drop options= from register()")

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._options[name] = self._signature_options(name, obj)
            self._hints[name] = type_hints(obj)
            self._items[name] = obj
            self._meta[name] = meta
            return obj

        return deco

    def _signature_options(self, name: str, obj: Any) -> dict[str, inspect.Parameter]:
        """The factory's option parameters: everything after the supplied leading ones; refuses *args/**kwargs."""
        try:
            params = list(inspect.signature(obj).parameters.values())
        except (TypeError, ValueError):
            raise ValueError(f"{self.kind} {name!r}: {obj!r} has no readable signature") from None
        head = params[:len(self.supplied)]
        if tuple(p.name for p in head) != self.supplied or any(p.kind not in _POSITIONAL for p in head):
            raise ValueError(f"{self.kind} {name!r}: the signature must start with ({', '.join(self.supplied)}), "
                             f"then the options")
        opts = {p.name: p for p in params[len(self.supplied):]}
        var = [p.name for p in opts.values() if p.kind not in _OPTION]
        if var:
            raise ValueError(f"{self.kind} {name!r}: options must be named keyword parameters, not *{var[0]}")
        lacking = [r for r in self.required if r not in opts]
        if lacking:
            raise ValueError(f"{self.kind} {name!r}: every {self.kind} takes option {lacking[0]!r}")
        return opts

    def unregister(self, name: str) -> None:
        """Remove `name` (a part registered for a test, or by a plugin being unloaded)."""
        self.get(name)
        for table in (self._items, self._meta, self._options, self._hints):
            del table[name]

    def get(self, name: str) -> T:
        """The object registered under `name`, or UnknownNameError naming the valid ones."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def meta(self, name: str) -> dict[str, Any]:
        """Metadata given at registration (help text, modality, ...)."""
        self.get(name)
        return self._meta[name]

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """The options of `name` in signature order; `.default` (`inspect.Parameter.empty`: required), `.annotation`."""
        self.get(name)
        return dict(self._options[name])

    def defaults(self, name: str) -> dict[str, Any]:
        """Option -> default value, for the options that have one."""
        return {k: p.default for k, p in self.options(name).items() if p.default is not p.empty}

    def check(self, name: str, opts: Mapping[str, Any]) -> None:
        """Refuse an unknown name, an option the part does not take, a required option left out, a value that does
        not fit its annotation (type, Range), or options that break the part's registered `check` rule."""
        valid = self.options(name)
        for k in opts:
            if k not in valid:
                raise OptionError(self.kind, name, k, list(valid))
        for k, p in valid.items():
            if p.default is p.empty and k not in opts:
                raise OptionError(self.kind, name, k, list(valid), missing=True)
        hints = self._hints.get(name, {})
        for k, v in opts.items():
            problem = option_problem(k, v, hints.get(k, valid[k].annotation))
            if problem is not None:
                raise OptionValueError(self.kind, name, problem)
        rule = self._meta[name].get("check")
        if rule is not None:
            problem = rule({**self.defaults(name), **opts})
            if problem:
                raise OptionValueError(self.kind, name, problem)

    def build(self, name: str, *supplied: Any, **opts: Any) -> Any:
        """Check `opts`, then call the factory with the framework-supplied arguments and the options."""
        if len(supplied) != len(self.supplied):
            raise TypeError(f"{self.kind} {name!r}: build takes ({', '.join(self.supplied)}) positionally, "
                            f"got {len(supplied)} arguments")
        self.check(name, opts)
        return self._items[name](*supplied, **opts)

    def names(self) -> list[str]:
        """Registered names, sorted, for --help and error messages."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
