"""Writing a partseg store: create it, then write cases atomically (tmp name, then rename).

The layout and the metadata are described in :mod:`partseg.store.zarrstore`; the stored image
dtypes in :mod:`partseg.store.encoding`. :func:`partseg.store.ingest.ingest` is the one caller
in the package.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from partseg.atomic import os_error_message
from partseg.errors import StoreError, WriteError
from partseg.locking import LOCK_NAME, run_lock
from partseg.names import check_name
from partseg.store.checks import expected_chunk_files
from partseg.store.encoding import candidate_steps, encode
from partseg.store.location import UrlLike, filesystem, local_path, zarr_store
from partseg.store.zarrstore import FORMAT, FORMAT_VERSION, NewerStoreError, read_index

#: Blosc compressors a store may use, and the default with its level: int16 scans with lz4hc 9
#: are 0.80x the .nii.gz size and minicubes read 1.5-2x faster than with zstd 5
#: (``tools/bench_io.py --tune``).
CODECS = ("lz4hc", "zstd", "lz4", "blosclz", "zlib")
CODEC = "lz4hc"
CLEVEL = 9
#: Name prefix of a case folder being written.
TMP_PREFIX = ".tmp-"
#: What a store writer does after a failed write.
RESUME = "the store keeps its complete cases; fix that and rerun the same command to resume"


def store_state(url: UrlLike) -> str:
    """What is at ``url``: ``"missing"``, ``"empty"`` (folder), ``"store"`` or ``"other"``.

    A folder holding only partseg's lock file (:mod:`partseg.locking`) is empty.

    Raises:
        NewerStoreError: a partseg store of a newer format (never "other": upgrade instead).
    """
    fs, root = filesystem(url)
    if not fs.exists(root):
        return "missing"
    if not fs.isdir(root):
        return "other"
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    if not [n for n in names if not n.startswith(LOCK_NAME)]:
        return "empty"
    try:
        read_index(url, zarr_store(url, read_only=True))
    except NewerStoreError:
        raise
    except StoreError:
        return "other"
    return "store"


def writable_state(url: UrlLike) -> str:
    """:func:`store_state` of a path a store may be written to; StoreError for ``"other"``."""
    state = store_state(url)
    if state == "other":
        raise StoreError(
            f"{os.fspath(url)} exists and is not a partseg store; refusing to write into it. "
            "Pick a new STORE path or remove it yourself"
        )
    return state


class StoreWriter:
    """Writes cases atomically into a partseg store (used by ingest; one per process).

    Each case is written under ``cases/.tmp-<id>-<pid>`` and renamed to ``cases/<id>`` when
    complete; the dataset index is only rewritten by the coordinating process, with
    :meth:`write_index`, after each completed case. Every chunk is written, even one equal to
    the fill value, and the case records its chunk files (``chunk_files``), so a chunk lost
    later reads as an error, not as zeros (:mod:`partseg.store.checks`). An operating-system
    error (full disk, read-only folder) removes the unfinished case and raises
    :class:`~partseg.errors.WriteError`.

    Example (needs a dataset on disk, so it is not run as a test)::

        writer = create_store("memory://doc/w.zarr", {"channels": ["t1"]})
        writer.write_case("c1", image, label, attrs, locations, (24, 32, 256))
    """

    def __init__(
        self, url: UrlLike, *, codec: str = CODEC, clevel: int = CLEVEL, shuffle: str = "shuffle"
    ) -> None:
        self.url = os.fspath(url)
        self.codec = codec
        self.clevel = clevel
        self.shuffle = shuffle
        self._zstore = zarr_store(url, read_only=False)
        self._fs, self._root = filesystem(url)

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in ("url", "codec", "clevel", "shuffle")}

    def __setstate__(self, state: dict) -> None:
        url = state.pop("url")
        self.__init__(url, **state)  # type: ignore[misc]

    def index(self) -> dict:
        """The current dataset index (root attrs)."""
        return read_index(self.url, self._zstore)

    def write_index(self, attrs: Mapping[str, Any]) -> None:
        """Replace the dataset index (an atomic rewrite of the root ``zarr.json``)."""
        import zarr

        json.dumps(dict(attrs))  # fail before writing if something is not JSON
        try:
            zarr.open_group(self._zstore, mode="r+").attrs.put(dict(attrs))
        except OSError as err:  # zarr writes zarr.json atomically: the old index is kept
            raise WriteError(os_error_message(err, self.url, kept=RESUME), err) from err

    def ensure_cases_group(self) -> None:
        """Create ``cases/`` when a store was created but killed before it had one."""
        import zarr

        root = zarr.open_group(self._zstore, mode="r+")
        if "cases" not in root:
            root.create_group("cases")

    def case_dirs(self) -> list[str]:
        """Names of the entries under ``cases/`` (complete cases and leftover tmp folders)."""
        path = f"{self._root}/cases"
        if not self._fs.exists(path):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(path, detail=False)]
        return sorted(n for n in names if n != "zarr.json")

    def remove_case_dir(self, name: str) -> None:
        """Delete ``cases/<name>`` (a leftover tmp folder or an unindexed case); a symlink is
        removed, never followed."""
        path = f"{self._root}/cases/{name}"
        if local_path(self.url) is not None:
            if os.path.islink(path) or os.path.isfile(path):
                os.unlink(path)
            else:
                shutil.rmtree(path, ignore_errors=True)
        elif self._fs.exists(path):
            self._fs.rm(path, recursive=True)

    def remove_partial_files(self) -> list[str]:
        """Remove the ``*.partial`` files zarr leaves when killed while writing a ``zarr.json``
        of the root or of ``cases/`` (call it while holding the store's lock)."""
        removed = []
        for folder in (self._root, f"{self._root}/cases"):
            if not self._fs.isdir(folder):
                continue
            for path in self._fs.ls(folder, detail=False):
                if path.endswith(".partial") and self._fs.isfile(path):
                    self._fs.rm(path)
                    removed.append(path)
        return removed

    def write_case(
        self,
        case_id: str,
        image: np.ndarray,
        label: np.ndarray | None,
        attrs: Mapping[str, Any],
        locations: np.ndarray,
        chunks: Sequence[int],
        *,
        dtype: str = "float32",
        channels_per_chunk: int = 1,
    ) -> None:
        """Write one case under a tmp name, then rename it into place.

        Args:
            case_id: the case's id (no ``/``, not starting with ``.``).
            image: (C, Z, Y, X) float values, stored as ``dtype``.
            label: (Z, Y, X) uint8 class ids, or None.
            attrs: case metadata (JSON-serialisable); for int16 its ``normalization`` gives
                each channel's candidate step (:func:`~partseg.store.encoding.candidate_steps`).
            locations: (N, 4) int32 rows (class, z, y, x).
            chunks: spatial chunk (Z, Y, X), clamped to the volume.
            dtype: ``"int16"``, ``"float16"`` or ``"float32"``.
            channels_per_chunk: channels stored together in a chunk (clamped to C).
        """
        import zarr

        with self._case_folder(case_id) as tmp:
            group = zarr.open_group(self._zstore, path=f"cases/{tmp}", mode="w")
            spatial = tuple(
                max(1, min(int(c), int(s))) for c, s in zip(chunks, image.shape[1:], strict=True)
            )
            cpc = max(1, min(int(channels_per_chunk), image.shape[0]))
            steps = candidate_steps(attrs.get("normalization") or {}, image.shape[0])
            stored, scale = encode(image, dtype, steps)
            files = {"image": self._array(group, "image", stored, (cpc, *spatial))}
            if scale is not None:
                group["image"].attrs.put({"scale": scale})
            if label is not None:
                files["label"] = self._array(
                    group, "label", label.astype(np.uint8, copy=False), spatial
                )
            locations = np.asarray(locations, dtype=np.int32).reshape(-1, 4)
            files["locations"] = self._array(
                group, "locations", locations, (max(1, len(locations)), 4)
            )
            group.attrs.put({**dict(attrs), "chunk_files": files})

    @contextmanager
    def _case_folder(self, case_id: str) -> Iterator[str]:
        """Yield the tmp folder name of ``case_id``, renamed into place when the block ends;
        an OSError removes the unfinished folder and becomes a WriteError."""
        check_name(case_id, f"store {self.url}: case id", StoreError)
        tmp = f"{TMP_PREFIX}{case_id}-{os.getpid()}"
        self.remove_case_dir(tmp)
        try:
            yield tmp
            self._rename(f"cases/{tmp}", f"cases/{case_id}")
        except OSError as err:  # WriteError included: the unfinished case goes either way
            self.remove_case_dir(tmp)
            where = err.filename or f"{self.url}/cases/{case_id}"
            message = os_error_message(err, where, kept=RESUME)
            raise WriteError(f"case {case_id!r}: {message}", err) from err

    def _array(self, group: Any, name: str, data: np.ndarray, chunks: Sequence[int]) -> int:
        """Write ``data`` as array ``name``, every chunk; returns the number of chunk files."""
        from zarr.codecs import BloscCodec

        compressor = BloscCodec(cname=self.codec, clevel=self.clevel, shuffle=self.shuffle)
        array = group.create_array(
            name,
            shape=data.shape,
            chunks=tuple(chunks),
            dtype=data.dtype,
            compressors=compressor,
            fill_value=0,
            config={"write_empty_chunks": True},  # a missing chunk is then always an error
        )
        if data.size:
            array[...] = data
        return expected_chunk_files(data.shape, chunks)

    def _rename(self, src: str, dst: str) -> None:
        self.remove_case_dir(dst.rsplit("/", 1)[-1])
        source, target = f"{self._root}/{src}", f"{self._root}/{dst}"
        if local_path(self.url) is not None:
            os.rename(source, target)  # atomic on one filesystem
        else:
            self._fs.mv(source, target, recursive=True)


def store_lock(url: UrlLike, command: str = "ingest") -> AbstractContextManager[Any]:
    """The writer's lock of a local store (:mod:`partseg.locking`); remote stores have none,
    so one writer at a time is the user's job there."""
    local = local_path(url)
    return nullcontext() if local is None else run_lock(local, command)


def create_store(
    url: UrlLike,
    index: Mapping[str, Any],
    *,
    overwrite: bool = False,
    codec: str = CODEC,
    clevel: int = CLEVEL,
    shuffle: str = "shuffle",
) -> StoreWriter:
    """Create (or, with ``overwrite``, recreate) an empty store with ``index`` as root attrs.

    Args:
        url: local path or fsspec URL.
        index: dataset index (``format`` and ``format_version`` are added).
        overwrite: replace an existing partseg store (never anything else).
        codec: Blosc compressor of the returned writer (:data:`CODECS`).
        clevel: its compression level (1-9).
        shuffle: Blosc filter of the returned writer: ``"shuffle"``, ``"bitshuffle"`` or
            ``"noshuffle"``.

    Raises:
        StoreError: ``url`` exists and is not an empty folder or a partseg store, or it is a
            partseg store and ``overwrite`` is False.
    """
    import zarr

    state = writable_state(url)
    if state == "store" and not overwrite:
        raise StoreError(f"{os.fspath(url)} is already a partseg store; pass --overwrite")
    try:
        if state == "store":
            _remove_store(url)
        if local_path(url) is not None:
            Path(local_path(url)).mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        zstore = zarr_store(url, read_only=False)
        # one write makes it a store (a kill leaves a store, not "not a partseg store"); no
        # mode="w", which would clear the folder and with it the writer's lock file
        attrs = {**dict(index), "format": FORMAT, "format_version": FORMAT_VERSION}
        zarr.create_group(zstore, attributes=attrs).create_group("cases")
    except OSError as err:
        raise WriteError(
            os_error_message(err, err.filename or os.fspath(url), kept=""), err
        ) from err
    return StoreWriter(url, codec=codec, clevel=clevel, shuffle=shuffle)


def _remove_store(url: UrlLike) -> None:
    """Delete a store's content; a local store keeps its folder and lock file."""
    local = local_path(url)
    if local is None:
        fs, root = filesystem(url)
        fs.rm(root, recursive=True)
        return
    for entry in os.scandir(local):
        if entry.name.startswith(LOCK_NAME):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
