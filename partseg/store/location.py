"""Where a store lives: a local folder or an fsspec URL (``s3://``, ``https://``, ...).

``file://`` URLs are local paths. Every store module opens stores through these helpers, so a
local path always gets zarr's ``LocalStore`` (and the chunk reader's plain file reads).

Remote protocols need fsspec's optional packages (``http(s)://``: aiohttp and requests,
``s3://``: s3fs, ``gs://``: gcsfs, ...); ``pip install 'partseg[remote]'`` installs the common
ones. Without them, opening such a store is a :class:`~partseg.errors.StoreError` naming the
package and the pip command, not an ImportError traceback. (``memory://`` stores live in one
process only: fine in tests, lost when a command ends.)

Example:
    >>> local_path("file:///data/brats.zarr"), local_path("s3://bucket/s.zarr")
    ('/data/brats.zarr', None)
    >>> REMOTE_PACKAGES["s3"]
    ('s3fs',)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

from partseg.errors import StoreError

UrlLike = str | os.PathLike
T = TypeVar("T")

#: fsspec protocol -> the packages it needs (``partseg[remote]`` installs those of http and s3).
REMOTE_PACKAGES: dict[str, tuple[str, ...]] = {
    "http": ("aiohttp", "requests"),
    "https": ("aiohttp", "requests"),
    "s3": ("s3fs",),
    "s3a": ("s3fs",),
    "gs": ("gcsfs",),
    "gcs": ("gcsfs",),
    "az": ("adlfs",),
    "abfs": ("adlfs",),
    "sftp": ("paramiko",),
}


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
    return _remote(url, lambda: FsspecStore.from_url(os.fspath(url), read_only=read_only))


def filesystem(url: UrlLike) -> tuple[Any, str]:
    """(fsspec filesystem, root path inside it) for ``url``."""
    import fsspec

    local = local_path(url)
    if local is not None:
        return fsspec.filesystem("file"), local
    return _remote(url, lambda: fsspec.core.url_to_fs(os.fspath(url)))


def _remote(url: UrlLike, open_: Callable[[], T]) -> T:
    """``open_()``, with a missing fsspec extra reported as a StoreError saying what to install."""
    try:
        return open_()
    except ImportError as err:
        raise StoreError(missing_package_message(os.fspath(url), err)) from err


def missing_package_message(url: str, err: ImportError) -> str:
    """What to install to open ``url``, from its protocol and fsspec's ImportError.

    Example:
        >>> text = missing_package_message("s3://b/s.zarr", ImportError("Install s3fs"))
        >>> text.split("; ")[-1]
        "install it with: pip install s3fs (or pip install 'partseg[remote]')"
    """
    protocol = url.split("://", 1)[0].lower()
    packages = REMOTE_PACKAGES.get(protocol) or ((err.name,) if err.name else ())
    if not packages:
        return f"store {url}: the {protocol}:// protocol needs a package that is missing ({err})"
    what = f"package {packages[0]}, which is" if len(packages) == 1 else (
        f"packages {' and '.join(packages)}, which are")  # fmt: skip
    return (
        f"store {url}: the {protocol}:// protocol needs the {what} not installed ({err}); "
        f"install it with: pip install {' '.join(packages)} (or pip install 'partseg[remote]')"
    )


def dir_size(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(folder, name))
    return total
