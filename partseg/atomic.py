"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file partseg writes (configs, metrics, splits, reports, plots, checkpoints, NIfTI exports)
goes through :func:`atomic_path`: the content is written to a temporary name in the same folder
and renamed over the target when complete; on any error the temporary file is removed and the
previous file, if any, is kept. An operating-system error (disk full, read-only file system, a
parent path that is a file) becomes a :class:`~partseg.errors.WriteError` whose one line names
the file and what to do (:func:`os_error_message`). A process killed mid-write leaves its
temporary file (``.<name>.<random><suffix>``); :func:`clean_temp_files` removes them for a
writer that holds the folder's lock (:mod:`partseg.locking`).

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

import errno
import glob
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from partseg.errors import WriteError

#: What to do about a failed write, by errno.
_HINTS = {
    errno.ENOSPC: "free disk space, or choose another location",
    errno.EDQUOT: "free space within your disk quota, or choose another location",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EACCES: "permission denied: choose another location or fix the permissions",
    errno.EPERM: "permission denied: choose another location or fix the permissions",
    errno.ENOENT: "check that the path exists",
    errno.ENOTDIR: "a parent of that path is a file, not a folder: choose another path",
    errno.EEXIST: "a file is in the way where a folder is needed: choose another path",
    errno.EISDIR: "that path is a folder: choose a file name",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
}


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    Args:
        path: the file to (re)write; its folder is created if needed.
        suffix: suffix of the temporary name, for writers that infer the format from it
            (``".png"`` for matplotlib, ``".nii.gz"`` for nibabel).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise WriteError(os_error_message(err, path), err) from err
    tmp = Path(name)
    try:
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; the result gets ordinary permissions
        yield tmp
        os.replace(tmp, path)
    except WriteError:  # a nested write already named its file
        raise
    except OSError as err:  # raised by the block (a full disk while writing) or the rename
        raise WriteError(os_error_message(err, path), err) from err
    finally:
        tmp.unlink(missing_ok=True)


def os_error_message(
    err: OSError,
    path: str | os.PathLike | None = None,
    verb: str = "write",
    kept: str = "the previous file, if any, is kept",
) -> str:
    """One line for ``err``: the file, the system's reason and what to do.

    Example:
        >>> full = OSError(errno.ENOSPC, "No space left on device")
        >>> print(os_error_message(full, "/out/a.json"))  # doctest: +NORMALIZE_WHITESPACE
        cannot write /out/a.json: No space left on device; free disk space, or choose another
        location; the previous file, if any, is kept
    """
    where = os.fspath(path) if path is not None else err.filename
    reason = err.strerror or str(err) or type(err).__name__
    if err.filename is not None and path is not None and os.fspath(err.filename) != where:
        reason += f" ({os.fsdecode(err.filename)})"
    hint = _HINTS.get(err.errno or 0, "check the path and its permissions")
    target = f" {os.fsdecode(where)}" if where is not None else ""
    tail = f"; {kept}" if kept and verb == "write" else ""
    return f"cannot {verb}{target}: {reason}; {hint}{tail}"


def clean_temp_files(folder: str | os.PathLike, targets: Sequence[str]) -> list[Path]:
    """Remove the temporary files a killed writer left for ``targets`` in ``folder``.

    Only call it while holding the folder's lock: another writer's temporary file looks the
    same. Returns the removed paths.

    Example:
        >>> import tempfile, pathlib
        >>> run = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (run / ".last.pt.k3j2h1g0.tmp").write_bytes(b"")
        >>> [p.name for p in clean_temp_files(run, ["last.pt"])]
        ['.last.pt.k3j2h1g0.tmp']
    """
    removed = []
    folder = Path(folder)
    for target in targets:
        for tmp in folder.glob(f".{glob.escape(target)}.*"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


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
