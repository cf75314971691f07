"""Failed writes keep the previous file and become one-line WriteErrors (:mod:`partseg.atomic`)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from partseg.atomic import atomic_path, clean_temp_files, os_error_message, write_json, write_text
from partseg.errors import WriteError


def test_path_under_a_file_is_a_write_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="a file is in the way where a folder is needed"):
        write_json(tmp_path / "file" / "out.json", {"a": 1})


def test_full_disk_while_writing_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    write_text(target, "old")
    full = OSError(errno.ENOSPC, "No space left on device")
    with (
        pytest.raises(WriteError, match="No space left on device; free disk"),
        atomic_path(target) as tmp,
    ):
        tmp.write_text("half")
        raise full
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left


def test_failed_rename_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "a.txt"
    write_text(target, "old")

    def readonly(*_args):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("partseg.atomic.os.replace", readonly)
    with pytest.raises(WriteError, match=r"cannot write .*a\.txt: Read-only file system"):
        write_text(target, "new")
    assert target.read_text() == "old"


def test_messages_name_the_file_and_the_fix() -> None:
    denied = PermissionError(errno.EACCES, "Permission denied", "/data/x")
    assert os_error_message(denied, verb="access") == (
        "cannot access /data/x: Permission denied; permission denied: choose another location "
        "or fix the permissions"
    )


def test_clean_temp_files_removes_only_the_targets_temporaries(tmp_path: Path) -> None:
    for name in (".last.pt.ab12cd34.tmp", ".best.pt.zz99yy88.tmp", "last.pt", ".other.x.tmp"):
        (tmp_path / name).write_bytes(b"")
    removed = clean_temp_files(tmp_path, ["last.pt", "best.pt"])
    assert sorted(p.name for p in removed) == [".best.pt.zz99yy88.tmp", ".last.pt.ab12cd34.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.x.tmp", "last.pt"]
