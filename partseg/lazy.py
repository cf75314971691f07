"""Lazy package attributes: names a package exports but imports only on first access.

Packages whose light part must not pull in torch (``partseg.losses``, ``partseg.models``: a
recipe's sections are validated without torch) export their torch-dependent names through a
module ``__getattr__`` (PEP 562) built here.

Example:
    >>> __getattr__ = lazy_getattr("os", {"join": "path"})
    >>> __getattr__("join")("a", "b")
    'a/b'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing ``name`` from ``package.table[name]`` on first access.

    Args:
        package: the package's ``__name__``.
        table: exported name -> the submodule of ``package`` that defines it.
    """

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{table[name]}"), name)

    return __getattr__
