"""Reading a box of a zarr v3 array chunk by chunk, decoded into a float32 or uint8 array.

:class:`ChunkReader` is what :meth:`partseg.store.zarrstore.Case.read` runs for the image and the
label: it fetches only the chunks a box touches and decodes them itself, since zarr's indexing
costs more than the decoding for a minicube.

A chunk file that is missing reads as the fill value only for arrays written before partseg
recorded its chunk files; for the others (``complete=True``, see :mod:`partseg.store.checks`)
it is a :class:`~partseg.errors.StoreError` naming the chunk, like a damaged one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from partseg.errors import StoreError


class ChunkReader:
    """Reads a box of a zarr v3 array by fetching and decoding exactly the chunks it touches.

    zarr's own indexing spends about 0.5 ms of Python/async bookkeeping per chunk, as much as
    decoding it. This reader handles the arrays partseg writes (regular grid, default chunk
    keys, little-endian bytes + Blosc) directly: it lists the touched chunk keys, fetches them
    (one file read after another into one buffer for a local store, one gathered async ``get``
    otherwise), decodes them with Blosc and copies the overlaps. Missing chunks (zarr skips
    chunks equal to the fill value) read as the fill value, unless ``complete`` says every chunk
    was written: then a missing chunk raises StoreError. Any other array goes through zarr's
    indexing.

    An int16 image with a ``scale`` attribute (:mod:`partseg.store.encoding`) is decoded to
    ``stored * scale[channel]``: the counts are copied into the float32 output, which is then
    scaled in place.
    """

    def __init__(self, array: Any, *, complete: bool = False) -> None:
        self.array = array
        self.complete = complete
        scale = array.attrs.get("scale")
        self.scale = None if scale is None else np.asarray(scale, np.float32)
        self.fast = self._supported(array)
        if self.fast:
            meta = array.metadata
            self.chunks = tuple(int(c) for c in meta.chunk_grid.chunk_shape)
            self.dtype = np.dtype(array.dtype)
            self.fill = meta.fill_value
            self.prefix = f"{array.store_path.path}/" if array.store_path.path else ""
            store = array.store_path.store
            root = getattr(store, "root", None)
            self.local_root = root if type(store).__name__ == "LocalStore" else None

    @staticmethod
    def _supported(array: Any) -> bool:
        try:
            from zarr.codecs import BloscCodec, BytesCodec
            from zarr.core.chunk_grids import RegularChunkGrid
            from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding

            meta = array.metadata
            codecs = meta.codecs
            little = len(codecs) == 2 and isinstance(codecs[0], BytesCodec)
            little = little and (codecs[0].endian is None or codecs[0].endian.value == "little")
            return (
                meta.zarr_format == 3
                and isinstance(meta.chunk_grid, RegularChunkGrid)
                and isinstance(meta.chunk_key_encoding, DefaultChunkKeyEncoding)
                and little
                and isinstance(codecs[1], BloscCodec)
                and np.dtype(array.dtype).byteorder in "=<|"
                and np.little_endian
            )
        except Exception:  # an unexpected zarr version or metadata: use zarr's indexing
            return False

    def read_into(self, out: np.ndarray, source: tuple[slice, ...]) -> None:
        """``out[...] = array[source]`` (decoded) for a box ``source`` inside the array.

        Chunks are decompressed into one reusable buffer. An int16 image is copied into the
        float32 ``out`` and then scaled in place, channel by channel (3x faster than numpy's
        mixed int16 x float32 multiply); other dtypes are copied into a staging array of the
        stored dtype, and a float16 store is then converted in one torch copy (numpy's float16
        -> float32 conversion is 5-30x slower).
        """
        if not self.fast:
            stored = self.array[source]
            out[...] = stored if self.scale is None else stored * self._factors(source[0])
            return
        from numcodecs import blosc

        ranges = [
            range(s.start // c, (s.stop - 1) // c + 1)
            for s, c in zip(source, self.chunks, strict=True)
        ]
        coords = list(itertools.product(*ranges))
        keys = [self.prefix + self.array.metadata.encode_chunk_key(c) for c in coords]
        buffer = np.empty(self.chunks, dtype=self.dtype)
        scaled = self.scale is not None
        stage = out if scaled or out.dtype == self.dtype else np.empty(out.shape, self.dtype)
        for coord, key, raw in zip(coords, keys, self._fetch(keys), strict=True):
            src, dst = [], []
            for s, i, c in zip(source, coord, self.chunks, strict=True):
                a = i * c
                x0, x1 = max(s.start, a), min(s.stop, a + c)
                src.append(slice(x0 - a, x1 - a))
                dst.append(slice(x0 - s.start, x1 - s.start))
            if raw is None:
                if self.complete:
                    raise self._damaged(key, None)
                stage[tuple(dst)] = self.fill  # 0 for every array partseg writes
            else:
                try:
                    blosc.decompress(raw, buffer)
                except (RuntimeError, ValueError, TypeError) as err:
                    raise self._damaged(key, err) from err
                stage[tuple(dst)] = buffer[tuple(src)]
        if scaled:
            for k, factor in enumerate(self._factors(source[0]).ravel()):
                out[k] *= factor
        elif stage is not out:
            convert_into(stage, out)

    def _damaged(self, key: str, err: Exception | None) -> StoreError:
        """The error for a chunk that is missing (``err`` None) or that Blosc cannot decode:
        names it and the fix."""
        where = self.local_root or type(self.array.store_path.store).__name__
        what = "is missing (deleted or lost)" if err is None else f"is damaged ({err})"
        return StoreError(
            f"chunk {key} in {where} {what}; delete that case's folder "
            "(cases/<id>) and rerun the same `partseg ingest` command, which rewrites "
            "missing cases"
        )

    def _factors(self, channels: slice) -> np.ndarray:
        """The scale of ``channels`` shaped to broadcast over (C, Z, Y, X)."""
        assert self.scale is not None
        return self.scale[channels].reshape(-1, 1, 1, 1)

    def _fetch(self, keys: list[str]) -> Iterable[memoryview | bytes | None]:
        """The stored bytes of each key (None: no such chunk), in order.

        Local chunk files are read one at a time into one buffer reused for the whole read (each
        view is valid until the next one is produced; a buffer per call keeps reads from
        several threads apart): a fresh bytes object per chunk doubled the time spent reading
        files. Other stores get one gathered async ``get``.
        """
        if self.local_root is not None:
            return self._read_local(keys)
        import asyncio

        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        store, prototype = self.array.store_path.store, default_buffer_prototype()

        async def gather() -> list[Any]:
            return await asyncio.gather(*(store.get(key, prototype) for key in keys))

        return [None if b is None else b.to_bytes() for b in sync(gather())]

    def _read_local(self, keys: list[str]) -> Iterator[memoryview | None]:
        assert self.local_root is not None
        buffer = np.empty(0, np.uint8)
        for key in keys:
            try:
                fd = os.open(os.path.join(self.local_root, key), os.O_RDONLY)
            except FileNotFoundError:
                yield None
                continue
            try:
                size = os.fstat(fd).st_size
                if size > len(buffer):
                    buffer = np.empty(size, np.uint8)
                view = memoryview(buffer)[:size]
                done = 0
                while done < size:  # more than one call only on a short read (network file systems)
                    got = os.readv(fd, [view[done:]])
                    if got == 0:
                        raise StoreError(
                            f"chunk file {key} of {self.local_root} ended after {done} of {size} "
                            "bytes while being read; re-ingest the case if this repeats"
                        )
                    done += got
            finally:
                os.close(fd)
            yield view


#: torch parallelises copies above this many elements (``at::internal::GRAIN_SIZE``).
_TORCH_GRAIN = 32768


def convert_into(source: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = source`` with a dtype conversion, vectorised by torch where it can be.

    The copy goes in slabs below torch's parallel grain size, so it stays on the calling thread:
    a parallel region per read costs more than it saves when the loader's worker processes
    already use every core (and a lot more on a busy machine).
    """
    try:
        import torch
    except ImportError:
        out[...] = source
        return
    target, src = torch.from_numpy(out), torch.from_numpy(source)
    inner = int(np.prod(source.shape[2:])) if source.ndim > 2 else 1  # elements per row
    if torch.get_num_threads() == 1 or source.ndim < 2 or inner > _TORCH_GRAIN:
        target.copy_(src)
        return
    step = max(1, _TORCH_GRAIN // inner)  # rows of the second axis per copy
    for i in range(source.shape[0]):  # views only: out may be a strided window
        for j in range(0, source.shape[1], step):
            target[i, j : j + step].copy_(src[i, j : j + step])
