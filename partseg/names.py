"""One rule for names and sizes read from untrusted files (stores, checkpoints, configs).

A case id in a store index, a variant name in a compare config or a case id in a folder of
predictions becomes a file or folder name (``OUT/<case>.nii.gz``, ``OUT/runs/<variant>``). Such
a name must stay a single path component below the folder it is written in, so it is checked
where it is read with :func:`check_name`, and outputs are placed with :func:`safe_child`:

* a non-empty string of at most :data:`MAX_NAME_BYTES` UTF-8 bytes (room for the suffixes and
  temporary names partseg adds within the usual 255-byte limit of a file name);
* no path separator (``/``, ``\\``), no control character (``\\x00``-``\\x1f``, ``\\x7f``);
* not ``.`` or ``..`` and not starting with ``.`` (hidden files, and partseg's own temporary
  names such as ``.tmp-<id>-<pid>``).

Sizes read from the same files (array shapes, chunk shapes, volume extents) become allocations;
:func:`check_shape` keeps them positive and bounded.

Example:
    >>> check_name("BraTS20_Training_001", "case id")
    'BraTS20_Training_001'
    >>> check_name("../x", "case id")
    Traceback (most recent call last):
    partseg.errors.ConfigError: case id '../x' is not a safe name: it contains a path separator
    >>> safe_child("/out", "c1.nii.gz").as_posix()
    '/out/c1.nii.gz'
    >>> check_shape([155, 240, 240], "case shape")
    (155, 240, 240)
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Sequence
from pathlib import Path

from partseg.errors import ConfigError, PartsegError

#: Longest name in UTF-8 bytes: 255 (the file-name limit of common file systems) minus room for
#: suffixes such as ``_probabilities.nii.gz`` and the temporary names of :mod:`partseg.atomic`.
MAX_NAME_BYTES = 200
#: Largest extent of one axis of a stored array (voxels), and of the whole array (elements).
MAX_EXTENT = 2**20
MAX_ELEMENTS = 2**40

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a safe single path component, or None when it is.

    Example:
        >>> name_problem("case_1"), name_problem("/abs")
        (None, 'it contains a path separator')
    """
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if not name:
        return "it is empty"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if _CONTROL.search(name):
        return "it contains a control character"
    if name.startswith("."):
        return "it starts with '.' (hidden and temporary names)"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_name(
    name: object, what: str, error: type[PartsegError] = ConfigError, hint: str = ""
) -> str:
    """Return ``name`` when it is a safe single path component, else raise ``error``.

    Args:
        name: the untrusted name.
        what: what it is and where it was read, e.g. ``"store data/b.zarr: case id"``.
        error: the exception type to raise (e.g. :class:`~partseg.errors.StoreError`).
        hint: what the user can do, appended to the message.
    """
    problem = name_problem(name)
    if problem is None:
        return name  # type: ignore[return-value]
    shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
    message = f"{what} {shown} is not a safe name: {problem}"
    raise error(f"{message}; {hint}" if hint else message)


def safe_child(
    parent: str | os.PathLike, name: str, *, error: type[PartsegError] = ConfigError
) -> Path:
    """``parent / name`` for a ``name`` that passes :func:`check_name`: never outside ``parent``.

    Use it wherever a name from a store, checkpoint or config becomes an output file name, e.g.
    ``safe_child(out, f"{case_id}.nii.gz")``.
    """
    return Path(parent) / check_name(name, f"output name in {os.fspath(parent)}:", error)


def check_shape(
    shape: object,
    what: str,
    error: type[PartsegError] = ConfigError,
    *,
    ndim: int | None = None,
    allow_zero: bool = False,
) -> tuple[int, ...]:
    """``shape`` as a tuple of ints when each extent is positive and bounded, else ``error``.

    Args:
        shape: the untrusted sequence of extents.
        what: what it is and where it was read.
        error: the exception type to raise.
        ndim: the required number of axes, if any.
        allow_zero: accept extents of 0 (an empty list of rows, for instance).
    """
    low = 0 if allow_zero else 1
    try:
        values = tuple(_as_int(v) for v in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise error(f"{what} {shape!r} is not a list of whole numbers") from None
    if ndim is not None and len(values) != ndim:
        raise error(f"{what} {list(values)} has {len(values)} axes, expected {ndim}")
    if any(v < low or v > MAX_EXTENT for v in values):
        raise error(f"{what} {list(values)} must have extents in {low}..{MAX_EXTENT}")
    total = 1
    for v in values:
        total *= v
    if total > MAX_ELEMENTS:
        raise error(f"{what} {list(values)} has more than {MAX_ELEMENTS} elements")
    return values


def _as_int(value: object) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(value)


__all__: Sequence[str] = ("check_name", "check_shape", "name_problem", "safe_child")
