"""Advisory locks: one writer at a time per store (ingest) or run folder (train, cv, compare,
predict).

A lock is the file ``FOLDER/.partseg.lock`` holding JSON: the holder's pid, host, start time,
command and command line, and a token unique to this acquisition. It is created atomically:
the content is written to a temporary file first and hard-linked to the lock name, which fails
when the name exists (``O_CREAT | O_EXCL`` on file systems without hard links), so a reader never
sees half a lock. A second writer is refused with a :class:`~partseg.errors.LockError` naming the
holder; readers (``info``, ``evaluate``, training's reads of a store) take no lock.

A lock whose holder is gone (a dead pid on this host, or a pid reused by a process started
later) is stale: it is broken with a warning and taken. Breaking renames the lock to a unique
name and checks that what was renamed is the stale lock read before, so two writers recovering
at once cannot both proceed. On another host the pid cannot be checked; the message then says
which file to delete once that process is known to be gone.

Example:
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> with run_lock(run, "train"):
    ...     with run_lock(run, "predict"):  # doctest: +ELLIPSIS
    ...         pass
    Traceback (most recent call last):
    partseg.errors.LockError: ... is in use by partseg train (pid ...
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from partseg.errors import LockError, WriteError

#: The lock file's name inside the locked folder.
LOCK_NAME = ".partseg.lock"
#: How long a fold job (``cv --fold``, ``compare --fold``) waits for a sibling fold job writing
#: the folder's shared files (a compare's data preparation with phantoms takes minutes).
FOLD_JOB_WAIT_S = 3600.0
_log = logging.getLogger("partseg")


@dataclass(frozen=True)
class Holder:
    """Who holds a lock.

    Attributes:
        pid: process id.
        host: host name.
        since: when the lock was taken (ISO 8601, local time with offset).
        command: the partseg command, e.g. ``"train"``.
        argv: the command line (shortened).
        token: unique per acquisition, so a release never removes another holder's lock.
        started: the process's start time (Linux clock ticks since boot), to tell a reused pid.
    """

    pid: int
    host: str
    since: str
    command: str
    argv: str = ""
    token: str = ""
    started: int | None = None

    def describe(self) -> str:
        """``partseg train (pid 12, host h, since 2024-...: partseg train ...)``."""
        line = f": {self.argv}" if self.argv else ""
        return f"partseg {self.command} (pid {self.pid} on {self.host}, since {self.since}{line})"


@dataclass
class Lock:
    """A held lock; :meth:`release` removes it when it is still this holder's."""

    path: Path
    holder: Holder

    def release(self) -> None:
        current = _read_holder(self.path)
        if current is not None and current.token == self.holder.token:
            self.path.unlink(missing_ok=True)


@contextmanager
def run_lock(
    folder: str | os.PathLike,
    command: str,
    *,
    wait_s: float = 0.0,
    log: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if needed) for the block; yields the folder.

    Args:
        folder: the store or run folder to write.
        command: the partseg command writing it, shown to a refused second writer.
        wait_s: how long to keep trying while another process of the same ``command`` holds
            it: fold jobs (``cv --fold``) take turns writing their folder's shared files. A
            holder of another command (a whole ``cv`` of that folder) refuses at once.
        log: told once when this starts waiting, and for whom.

    Raises:
        LockError: another live process holds the lock.
        WriteError: the folder cannot be created or written.
    """
    deadline, told = time.monotonic() + wait_s, False
    while True:
        try:
            lock = acquire(folder, command)
            break
        except LockError:
            holder = read_holder(folder)
            if time.monotonic() >= deadline or (holder is not None and holder.command != command):
                raise
            if log is not None and holder is not None and not told:
                log(f"{folder} is in use by {holder.describe()}; waiting for it")
                told = True
            time.sleep(0.2)
    try:
        yield lock.path.parent
    finally:
        lock.release()


def fold_job_lock(
    folder: str | os.PathLike, command: str, log: Callable[[str], None] | None = None
) -> AbstractContextManager[Path]:
    """The lock a fold job of ``command`` (``cv``, ``compare``) holds while it writes its
    folder's shared files: it waits up to :data:`FOLD_JOB_WAIT_S` for a sibling fold job and is
    refused at once by a whole ``command`` holding the folder."""
    return run_lock(folder, f"{command} --fold", wait_s=FOLD_JOB_WAIT_S, log=log)


def acquire(folder: str | os.PathLike, command: str) -> Lock:
    """Take the lock of ``folder`` or raise :class:`~partseg.errors.LockError`; see the module."""
    from partseg.atomic import os_error_message

    folder = Path(folder)
    path = folder / LOCK_NAME
    holder = _me(command)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(os_error_message(err, folder, kept=""), err) from err
    try:
        fd, name = tempfile.mkstemp(prefix=f"{LOCK_NAME}.", suffix=".new", dir=folder)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(asdict(holder)))
    except OSError as err:
        raise WriteError(os_error_message(err, path), err) from err
    try:
        for _ in range(3):
            if _create(Path(name), path):
                return Lock(path, holder)
            other = _read_holder(path)
            if other is None:
                if _age(path) < 10:  # being created by the O_EXCL fallback, or just removed
                    time.sleep(0.2)
                    continue
                _log.warning(f"warning: removed an unreadable lock file {path}")
                _break(path, None)
            elif _alive(other):
                raise LockError(
                    f"{folder} is in use by {other.describe()}; wait until it has finished, or "
                    f"write elsewhere. If that process is gone, delete {path}"
                )
            else:
                _log.warning(
                    f"warning: {folder} was locked by {other.describe()}, which is no longer "
                    "running; taking over its lock"
                )
                _break(path, other)
        raise LockError(f"cannot take the lock {path}: it keeps changing; try again")
    finally:
        Path(name).unlink(missing_ok=True)


def read_holder(folder: str | os.PathLike) -> Holder | None:
    """The holder of ``folder``'s lock, or None when it is not locked (or unreadable)."""
    return _read_holder(Path(folder) / LOCK_NAME)


def _me(command: str) -> Holder:
    argv = " ".join(["partseg", *sys.argv[1:]]) if sys.argv else "partseg"
    return Holder(
        pid=os.getpid(),
        host=socket.gethostname(),
        since=datetime.now().astimezone().isoformat(timespec="seconds"),
        command=command,
        argv=argv if len(argv) <= 200 else argv[:197] + "...",
        token=uuid.uuid4().hex,
        started=_start_ticks(os.getpid()),
    )


def _create(content: Path, path: Path) -> bool:
    """Give ``path`` the content of the file ``content`` if ``path`` does not exist."""
    try:
        os.link(content, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system: exclusive create, then write
        pass
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(content.read_text())
    return True


def _read_holder(path: Path) -> Holder | None:
    try:
        data: Any = json.loads(path.read_text())
        return Holder(**data)
    except (OSError, ValueError, TypeError):
        return None


def _age(path: Path) -> float:
    try:
        return datetime.now().timestamp() - path.stat().st_mtime
    except OSError:
        return 0.0


def _alive(holder: Holder) -> bool:
    """Whether the holder may still run: True for another host, where it cannot be checked."""
    if holder.host != socket.gethostname():
        return True
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists, owned by someone else
    started = _start_ticks(holder.pid)
    return holder.started is None or started is None or started == holder.started


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _break(path: Path, stale: Holder | None) -> None:
    """Remove the stale lock at ``path``, unless another writer replaced it meanwhile."""
    aside = path.with_name(f"{LOCK_NAME}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another writer broke it first
    moved = _read_holder(aside)
    if stale is not None and (moved is None or moved.token != stale.token):
        with suppress(OSError):  # a fresh lock was renamed: put it back
            os.link(aside, path)
    aside.unlink(missing_ok=True)


__all__ = ["LOCK_NAME", "Holder", "Lock", "acquire", "read_holder", "run_lock"]
