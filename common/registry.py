"""A name -> factory table, so backbones, heads, fusions and losses are picked by name, not if-chains."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}; valid {kind} names: {', '.join(valid) or '(none)'}")

    def __str__(self) -> str:
        return self.args[0]


class Registry(Generic[T]):
    """A named table of factories of one kind; `register` is a decorator, `get` raises a helpful error."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: `@REG.register("tcn", help="...")` adds the decorated object under `name`."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            self._meta[name] = meta
            return obj

        return deco

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

    def names(self) -> list[str]:
        """Registered names, sorted, for --help and error messages."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self.names())
