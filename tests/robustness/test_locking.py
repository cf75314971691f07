"""Advisory locks of stores and run folders (:mod:`partseg.locking`)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from partseg.errors import LockError
from partseg.locking import LOCK_NAME, acquire, read_holder, run_lock


def _fake_lock(folder: Path, pid: int, host: str | None = None, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"pid": pid, "host": host or socket.gethostname(), "since": "2024-01-01T00:00:00",
            "command": "train", "argv": "partseg train x", "token": "t0", **extra}  # fmt: skip
    path = folder / LOCK_NAME
    path.write_text(json.dumps(data))
    return path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_lock_is_held_for_the_block_and_removed_after(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with run_lock(run, "train") as folder:
        assert folder == run
        holder = read_holder(run)
        assert holder is not None and holder.pid == os.getpid() and holder.command == "train"
        assert [p.name for p in run.iterdir()] == [LOCK_NAME]  # no temporary file left
    assert not (run / LOCK_NAME).exists()


def test_second_writer_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    with run_lock(tmp_path, "ingest"), pytest.raises(LockError) as info:
        acquire(tmp_path, "ingest")
    message = str(info.value)
    assert f"pid {os.getpid()}" in message and socket.gethostname() in message
    assert "partseg ingest" in message and "since" in message and LOCK_NAME in message


def test_a_brief_lock_is_waited_for(tmp_path: Path) -> None:
    import threading

    run = tmp_path / "run"
    held = acquire(run, "cv --fold")
    threading.Timer(0.3, held.release).start()  # another fold job finishing its write
    told: list[str] = []
    with run_lock(run, "cv --fold", wait_s=10, log=told.append):
        assert read_holder(run).pid == os.getpid()
    assert len(told) == 1 and "in use by partseg cv --fold" in told[0]
    held = acquire(run, "cv --fold")
    still = pytest.raises(LockError, match="in use by partseg cv --fold")
    with still, run_lock(run, "cv --fold", wait_s=0.3):
        pass  # still held when the wait is over
    held.release()
    held, start = acquire(run, "cv"), time.monotonic()  # a whole cv holds the folder for hours
    refused = pytest.raises(LockError, match=r"in use by partseg cv \(pid")
    with refused, run_lock(run, "cv --fold", wait_s=30):
        pass
    assert time.monotonic() - start < 5  # refused at once, not after 30 s
    held.release()


def test_live_holder_of_another_process_refuses(tmp_path: Path) -> None:
    _fake_lock(tmp_path, os.getppid())
    with pytest.raises(LockError, match=f"pid {os.getppid()}"):
        acquire(tmp_path, "train")
    assert read_holder(tmp_path).token == "t0"  # the holder's lock is untouched


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_stale_lock_of_a_dead_pid_is_recovered_with_a_warning(tmp_path: Path) -> None:
    _fake_lock(tmp_path, _dead_pid())
    collect = _Collect()
    logging.getLogger("partseg").addHandler(collect)
    try:
        lock = acquire(tmp_path, "train")
    finally:
        logging.getLogger("partseg").removeHandler(collect)
    assert len(collect.lines) == 1 and "which is no longer running" in collect.lines[0]
    assert read_holder(tmp_path).token == lock.holder.token
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_reused_pid_with_another_start_time_is_stale(tmp_path: Path) -> None:
    _fake_lock(tmp_path, os.getppid(), started=1)  # the parent started at another tick
    acquire(tmp_path, "train").release()


def test_lock_of_another_host_is_never_broken(tmp_path: Path) -> None:
    _fake_lock(tmp_path, _dead_pid(), host="elsewhere.example")
    with pytest.raises(LockError, match=r"elsewhere\.example"):
        acquire(tmp_path, "train")


def test_release_keeps_a_lock_that_is_no_longer_ours(tmp_path: Path) -> None:
    lock = acquire(tmp_path, "train")
    _fake_lock(tmp_path, os.getppid())  # someone broke ours and took it
    lock.release()
    assert read_holder(tmp_path).token == "t0"


def test_lock_under_a_file_is_a_write_error(tmp_path: Path) -> None:
    from partseg.errors import WriteError

    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match=r"cannot write .*file/run: Not a directory; a parent"):
        acquire(tmp_path / "file" / "run", "train")
