"""Exception types that users see.

Every message says *what* is wrong, *where* (case, file, key) and *what to do*. The CLI turns
a :class:`PartsegError` into one line on stderr and a non-zero exit status; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class PartsegError(Exception):
    """Base class of every error partseg reports to a user."""


class InputError(PartsegError):
    """A source case cannot be ingested: bad shape, missing file, NaN voxels, bad labels...

    Args:
        case: case identifier, e.g. ``"BraTS20_Training_001"``.
        path: the file that shows the problem (or the case folder).
        problem: what is wrong, in plain words.
        hint: what the user can do about it.
    """

    def __init__(self, case: str, path: object, problem: str, hint: str = "") -> None:
        self.case, self.path, self.problem, self.hint = case, str(path), problem, hint
        message = f"case {case!r}: {problem} ({self.path})"
        if hint:
            message += f"; {hint}"
        super().__init__(message)


class StoreError(PartsegError):
    """A path is not a (complete) partseg store, or a case or array is missing from it."""


class GeometryError(PartsegError):
    """Minicube sizes, margins or strides that cannot tile a volume."""


class NotTileableError(GeometryError):
    """A model the layer-wise engine cannot run exactly (e.g. instance or group norm)."""


class ConfigError(PartsegError):
    """A configuration key or value is invalid."""


class CheckpointError(PartsegError):
    """A checkpoint is unreadable or does not fit the data it is applied to."""


class TrainingError(PartsegError):
    """Training cannot go on: a non-finite loss or a run directory that cannot be written."""


class LockError(PartsegError):
    """A store or run folder is in use by another partseg process (see :mod:`partseg.locking`)."""


class WriteError(PartsegError, OSError):
    """A file or folder cannot be written (disk full, read-only, not a folder); the previous
    content, if any, is kept (see :mod:`partseg.atomic`).

    Also an ``OSError`` carrying the ``errno``, ``strerror`` and ``filename`` of its cause, so
    callers that turn write failures into their own error keep working.
    """

    def __init__(self, message: str, cause: OSError | None = None) -> None:
        super().__init__(message)
        if cause is not None:
            self.errno, self.strerror, self.filename = cause.errno, cause.strerror, cause.filename

    def __str__(self) -> str:  # the message, not OSError's "[Errno 28] ..."
        return str(self.args[0]) if self.args else ""
