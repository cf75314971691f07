"""Reading YAML mappings and applying dotted ``key=value`` overrides to nested dicts.

Overrides work on the raw (parsed YAML) mapping before validation: ``train.epochs=5`` sets
``raw["train"]["epochs"]``; a part made of digits indexes a list (``variants.1.name=x``); the
value is parsed by ``yaml.safe_load`` (``1`` int, ``[1, 2]`` list, ``off`` the string).

Two spellings of an override meet in a compare config's variant overrides, and
:func:`dotted_items` gives them one meaning: a dotted key (``model.base_width: 8``,
``loss.params: {gamma: 2}``) sets exactly the value it names; a section in nested form
(``model: {base_width: 8}``, what ``variants.1.overrides.model.base_width=8`` on the command line
creates) merges into that section leaf by leaf instead of replacing it.

Example:
    >>> raw = {"train": {"epochs": 2}}
    >>> set_dotted(raw, "train.batch_size=4")
    >>> raw
    {'train': {'epochs': 2, 'batch_size': 4}}
    >>> list(dotted_items("model", {"base_width": 8, "dilations": [1, 2]}))
    [('model.base_width', 8), ('model.dilations', [1, 2])]
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from partseg.errors import ConfigError

__all__ = ["dotted_items", "parse_override", "read_yaml_mapping", "set_dotted", "set_path"]


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """Read a YAML file (``yaml.safe_load``) that must hold a mapping; ConfigError otherwise."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must be a mapping of sections, got {type(raw).__name__}")
    return raw


def set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` in a nested dict, creating sections on the way.

    A part made of digits indexes a list (``cascades.0.voi``).

    Example:
        >>> raw = {"a": {"b": 1}, "l": [{"x": 1}]}
        >>> set_path(raw, "a.c.d", 2)
        >>> set_path(raw, "l.0.x", 3)
        >>> raw
        {'a': {'b': 1, 'c': {'d': 2}}, 'l': [{'x': 3}]}
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override key {key!r} has an empty part; write e.g. train.epochs")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key}: {part} is not an index of a {len(node)}-list")
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
            if not last and node.get(part) is None:
                node[part] = {}
        else:
            raise ConfigError(f"override {key}: {parts[i - 1]} is a value, not a section")
        if last:
            node[index] = copy.deepcopy(value)
        else:
            node = node[index]


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` with the value parsed as YAML (``1`` int, ``[1, 2]`` list, ``off`` str)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({err})") from err


def set_dotted(raw: dict[str, Any], override: str) -> None:
    """Apply one ``section.key=value`` override to a nested dict (value parsed as YAML).

    Example:
        >>> raw = {}
        >>> set_dotted(raw, "partition.core=[32, 32, 32]")
        >>> raw
        {'partition': {'core': [32, 32, 32]}}
    """
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form section.key=value")
    key, value = parse_override(override)
    if len(key.split(".")) < 2:
        raise ConfigError(f"override {override!r}: the key must be section.key, e.g. train.epochs")
    set_path(raw, key, value)


def dotted_items(key: str, value: Any) -> Iterator[tuple[str, Any]]:
    """The ``(dotted key, value)`` pairs one override entry stands for.

    A key without dots whose value is a non-empty mapping is a section in nested form: it
    yields one pair per leaf (nested mappings are followed), so applying them merges into the
    section. Any other entry (a dotted key, or a scalar or list value) yields itself.

    Example:
        >>> list(dotted_items("loss", {"params": {"gamma": 2}}))
        [('loss.params.gamma', 2)]
        >>> list(dotted_items("loss.params", {"gamma": 2}))
        [('loss.params', {'gamma': 2})]
    """
    if "." in key or not isinstance(value, Mapping) or not value:
        yield key, value
        return
    yield from _leaves(key, value)


def _leaves(prefix: str, mapping: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for name, value in mapping.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(f"{prefix}.{name}", value)
        else:
            yield f"{prefix}.{name}", value
