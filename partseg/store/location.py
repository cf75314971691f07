"""Where a store lives: a local folder or an fsspec URL (``memory://``, ``s3://``, ...).

``file://`` URLs are local paths. Every store module opens stores through these helpers, so a
local path always gets zarr's ``LocalStore`` (and the chunk reader's plain file reads).

Example:
    >>> local_path("file:///data/brats.zarr"), local_path("memory://x/s.zarr")
    ('/data/brats.zarr', None)
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

UrlLike = str | os.PathLike


def is_url(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def local_path(url: UrlLike) -> str | None:
    """The local path of ``url``, or None for a remote/in-memory fsspec URL."""
    text = os.fspath(url)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if is_url(text):
        return None
    return os.path.abspath(text)


def zarr_store(url: UrlLike, read_only: bool) -> Any:
    from zarr.storage import FsspecStore, LocalStore

    local = local_path(url)
    if local is not None:
        return LocalStore(local, read_only=read_only)
    return FsspecStore.from_url(os.fspath(url), read_only=read_only)


def filesystem(url: UrlLike) -> tuple[Any, str]:
    """(fsspec filesystem, root path inside it) for ``url``."""
    import fsspec

    local = local_path(url)
    if local is not None:
        return fsspec.filesystem("file"), local
    return fsspec.core.url_to_fs(os.fspath(url))


def dir_size(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(folder, name))
    return total
