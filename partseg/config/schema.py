"""The generic typed validator: a YAML mapping -> a frozen section dataclass, or a clear error.

:func:`build_section` checks every key against the dataclass's fields (an unknown key names the
nearest valid one) and every value against the field's type hint (``int``, ``float``, ``bool``,
``str``, ``X | None``, ``tuple[T, ...]``, ``tuple[A, B]``, mappings), then lets the dataclass's
``__post_init__`` check the values. Nothing here knows any section: the sections live in
:mod:`partseg.config.sections`, the cross-field rules in :mod:`partseg.config.rules`.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Pair:
    ...     size: tuple[int, ...] = (1,)
    ...     rate: float = 0.5
    >>> build_section("pair", Pair, {"size": [2, 3], "rate": "1e-3"})
    Pair(size=(2, 3), rate=0.001)
    >>> build_section("pair", Pair, {"sise": [2]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    partseg.errors.ConfigError: unknown config key pair.sise; did you mean 'size'? valid keys: ...
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from partseg.errors import ConfigError, PartsegError

__all__ = ["build_section", "check_type", "fail", "nearest", "plain", "positive"]


def fail(key: str, value: object, problem: str) -> ConfigError:
    """The error of one bad value: ``config key KEY=VALUE: PROBLEM``."""
    return ConfigError(f"config key {key}={value!r}: {problem}")


def positive(key: str, value: float, *, zero_ok: bool = False) -> None:
    """ConfigError unless ``value`` > 0 (or >= 0 with ``zero_ok``)."""
    if value < 0 or (value == 0 and not zero_ok):
        raise fail(key, value, "must be >= 0" if zero_ok else "must be > 0")


def nearest(word: str, options: Sequence[str]) -> str:
    """``did you mean 'x'? valid keys: ...`` for an unknown ``word``."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid keys: {', '.join(options)}"


def plain(value: Any) -> Any:
    """Mappings -> dicts and tuples -> lists, recursively (YAML, JSON and checkpoint friendly)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def check_type(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a (simple) type hint; lists become tuples where tuples are typed.

    Handles bool/int/float/str, ``X | None``, ``tuple[T, ...]``, ``tuple[A, B]``, Mapping and
    Any; other hints pass through unchecked (the section's own ``__post_init__`` validates).
    """
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return value
    if origin in (typing.Union, types.UnionType):
        return _check_union(key, value, typing.get_args(hint))
    if origin is tuple:
        return _check_tuple(key, value, typing.get_args(hint))
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            raise fail(key, value, "expected a mapping of key: value")
        return dict(value)
    return _check_scalar(key, value, hint)


def _check_union(key: str, value: Any, options: tuple[Any, ...]) -> Any:
    """The first option that accepts ``value``, its own type first (``float | int`` keeps 16
    an int: an overlap of 16 voxels is not a fraction of 16.0)."""
    if value is None and type(None) in options:
        return None
    errors = []
    options = tuple(o for o in options if o is not type(None))
    exact = tuple(o for o in options if type(value) is o)
    for option in (*exact, *(o for o in options if o not in exact)):
        try:
            return check_type(key, value, option)
        except ConfigError as err:
            errors.append(err)
    raise errors[0]


def _check_tuple(key: str, value: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple):
        raise fail(key, value, "expected a list")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(check_type(key, v, args[0]) for v in value)
    if args and len(args) != len(value):
        raise fail(key, list(value), f"expected {len(args)} values")
    return tuple(check_type(key, v, a) for v, a in zip(value, args or value, strict=False))


def _check_scalar(key: str, value: Any, hint: Any) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise fail(key, value, "expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(key, value, "expected an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise fail(key, value, "expected a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(key, value, "expected a number")
        return float(value)
    if hint is str:
        if key == "train.amp" and isinstance(value, bool):  # YAML 1.1 reads off/on as booleans
            return "auto" if value else "off"
        if not isinstance(value, str):
            raise fail(key, value, "expected a string")
        return value
    return value


def build_section(name: str, cls: type, values: Mapping[str, Any] | None) -> Any:
    """Build one section dataclass from a mapping, checking keys and value types.

    Raises:
        ConfigError: unknown key (naming the nearest valid one), wrong type or bad value.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise fail(name, values, "a section must be a mapping of key: value")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(f"unknown config key {name}.{key}; {nearest(str(key), valid)}")
        kwargs[key] = check_type(f"{name}.{key}", value, hints.get(key, Any))
    try:
        return cls(**kwargs)
    except PartsegError as err:
        if name in str(err):
            raise
        raise ConfigError(f"section {name!r}: {err}") from err
    except (TypeError, ValueError) as err:
        raise ConfigError(f"section {name!r}: {err}") from err
