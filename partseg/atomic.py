"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file partseg writes (configs, metrics, splits, reports, plots, checkpoints, NIfTI exports)
goes through :func:`atomic_path`: the content is written to a temporary name in the same folder
and renamed over the target when complete; on any error the temporary file is removed and the
previous file, if any, is kept.

Example:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out" / "summary.json"
    >>> write_json(target, {"dice": 0.9})
    >>> target.read_text()
    '{\\n "dice": 0.9\\n}'
    >>> oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    True
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    Args:
        path: the file to (re)write; its folder is created if needed.
        suffix: suffix of the temporary name, for writers that infer the format from it
            (``".png"`` for matplotlib, ``".nii.gz"`` for nibabel).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; the result gets ordinary permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> None:
    """Write ``data`` as JSON atomically; numpy scalars and other numbers become floats."""
    write_text(path, json.dumps(data, indent=indent, default=float))
