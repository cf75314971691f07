"""Name -> entry registries: one per kind of thing (losses, models, blend modes, layouts, ...).

A registry is the single list of the names a kind accepts. The CLI's ``choices=``, the docs'
lists and config validation all read it, so a new entry is one module plus one registration.
Entries may be registered lazily as ``"module:attribute"`` strings, so listing or validating
names never imports the (heavy) module that implements them; :meth:`Registry.get` imports on
first use.

Example:
    >>> COLOURS = Registry("colour")
    >>> @COLOURS.register("red")
    ... def red() -> str:
    ...     return "#f00"
    >>> COLOURS.add("sqrt", "math:sqrt", help="lazily imported")
    >>> COLOURS.names()
    ('red', 'sqrt')
    >>> COLOURS.get("sqrt")(9.0)
    3.0
    >>> COLOURS.get("rde")
    Traceback (most recent call last):
    ...
    partseg.errors.ConfigError: unknown colour 'rde'; did you mean 'red'? choose one of: red, sqrt
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from partseg.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One registered name: the object (or its ``"module:attribute"`` path) and a help line."""

    name: str
    target: Any
    help: str = ""

    def load(self) -> Any:
        """The registered object, importing ``"module:attribute"`` targets on first use."""
        if isinstance(self.target, str) and ":" in self.target:
            module, _, attribute = self.target.partition(":")
            return getattr(importlib.import_module(module), attribute)
        return self.target


class Registry(Generic[T]):
    """An ordered mapping of names to entries of one kind, with helpful unknown-name errors.

    Args:
        kind: what the names name, for messages (``"loss"``, ``"model"``, ``"blend mode"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: T | str, *, help: str = "") -> None:
        """Register ``target`` (an object or a lazy ``"module:attribute"``) under ``name``."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, target, help)

    def register(self, name: str, *, help: str = "") -> Callable[[T], T]:
        """Decorator form of :meth:`add`; returns the object unchanged."""

        def decorate(target: T) -> T:
            self.add(name, target, help=help)
            return target

        return decorate

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order (use them for ``choices=``)."""
        return tuple(self._entries)

    def entries(self) -> tuple[Entry, ...]:
        """Registered entries in registration order (names with their help lines)."""
        return tuple(self._entries.values())

    def check(self, name: str, *, key: str | None = None) -> str:
        """Return ``name`` if registered; else raise a ConfigError naming the nearest one.

        Args:
            name: the name to check.
            key: the config key or CLI flag the name came from, for the message.
        """
        if name in self._entries:
            return name
        options = list(self._entries)
        close = difflib.get_close_matches(str(name), options, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        where = f"{key}=" if key else f"{self.kind} "
        prefix = f"{where}{name!r}" if key else f"unknown {self.kind} {name!r}"
        raise ConfigError(f"{prefix}; {hint}choose one of: {', '.join(options)}")

    def get(self, name: str, *, key: str | None = None) -> T:
        """The object registered under ``name`` (imported on first use)."""
        return self._entries[self.check(name, key=key)].load()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
