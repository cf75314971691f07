"""Row buffers of the layer-wise engine: the rows of one node's output still to be read.

A node appends its output slab by slab (rows only grow); its consumers fetch row ranges,
zeros outside the node's extent (the zero padding of the whole-volume forward), and tell the
buffer which rows they will never read again, which are then dropped. So a node that is read
soon after it is written (a conv feeding the next conv) holds a few slabs, and a skip feature
holds the rows between where the encoder is and where the decoder is, not the volume.

Two storages behind one interface:

* :class:`MemoryRows`: tensors in RAM; with a CUDA model they live in pinned host memory and
  travel to the device per fetch, so device memory is bounded by the slab, not the volume.
* :class:`ZarrRows`: a zarr array in a scratch folder, for volumes whose buffered rows do not
  fit in RAM (bf16 rows are stored as their int16 bit patterns, exactly).

Example:
    >>> rows = MemoryRows(6)
    >>> rows.append(torch.arange(4.0).view(1, 1, 4, 1))
    >>> rows.fetch(-1, 3).flatten().tolist()
    [0.0, 0.0, 1.0, 2.0]
    >>> rows.release(2); rows.start
    2
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch

from partseg.errors import GeometryError


class Rows(Protocol):
    """What the engine needs of a buffer (see the module docstring)."""

    end: int
    start: int

    def append(self, x: torch.Tensor) -> None: ...

    def fetch(self, lo: int, hi: int, device: torch.device | None = None) -> torch.Tensor: ...

    def release(self, below: int) -> None: ...

    def slabs(self) -> Iterator[torch.Tensor]: ...

    @property
    def nbytes(self) -> int: ...


class _RowsBase:
    """Bookkeeping shared by the storages: extent, produced rows, released rows."""

    def __init__(self, rows: int) -> None:
        self.rows = int(rows)
        self.end = 0  # rows [0, end) have been appended
        self.start = 0  # rows below start were released
        self._like: torch.Tensor | None = None  # one row: channels, plane, dtype

    def _check(self, lo: int, hi: int) -> None:
        first = max(lo, 0)
        if first < self.start and first < min(hi, self.rows):
            raise GeometryError(f"rows [{lo}, {hi}) were released (kept from {self.start})")
        if min(hi, self.rows) > self.end:
            raise GeometryError(f"rows [{lo}, {hi}) asked before they exist (have {self.end})")
        if self._like is None:
            raise GeometryError("rows fetched from an empty buffer")

    def _zeros(self, n: int, device: torch.device | None) -> torch.Tensor:
        assert self._like is not None
        shape = (1, self._like.shape[1], n, *self._like.shape[3:])
        return torch.zeros(shape, dtype=self._like.dtype, device=device or self._like.device)

    def _assemble(
        self, lo: int, hi: int, inside: torch.Tensor | None, device: torch.device | None
    ) -> torch.Tensor:
        """Zero rows before 0 and after ``rows`` around the rows inside the extent."""
        before, after = max(0, -lo), max(0, hi - max(lo, self.rows))
        if hi <= 0 or lo >= self.rows:
            return self._zeros(hi - lo, device)
        parts = [self._zeros(before, device)] if before else []
        parts.append(inside if inside is not None else self._zeros(0, device))
        if after:
            parts.append(self._zeros(after, device))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


class MemoryRows(_RowsBase):
    """Rows in RAM as a list of slabs; pinned host memory when ``pin`` (CUDA models)."""

    def __init__(self, rows: int, *, pin: bool = False) -> None:
        super().__init__(rows)
        self.pin = pin
        self._slabs: list[tuple[int, torch.Tensor]] = []  # (first row, (1, C, n, *plane))

    def append(self, x: torch.Tensor) -> None:
        if self.pin and x.device.type != "cpu":
            host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
            x = host.copy_(x)
        self._slabs.append((self.end, x))
        self._like = x[:, :, :0]
        self.end += x.shape[2]

    def fetch(self, lo: int, hi: int, device: torch.device | None = None) -> torch.Tensor:
        self._check(lo, hi)
        a, b = max(lo, 0), min(hi, self.rows)
        pieces = [
            x[:, :, max(a, s) - s : min(b, s + x.shape[2]) - s]
            for s, x in self._slabs
            if s < b and s + x.shape[2] > a
        ]
        inside = None
        if pieces:
            inside = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
            if device is not None and inside.device != torch.device(device):
                inside = inside.to(device, non_blocking=True)
        return self._assemble(lo, hi, inside, device)

    def release(self, below: int) -> None:
        self.start = max(self.start, int(below))
        self._slabs = [(s, x) for s, x in self._slabs if s + x.shape[2] > self.start]

    def slabs(self) -> Iterator[torch.Tensor]:
        for _, x in self._slabs:
            yield x

    @property
    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for _, x in self._slabs)


_BITS = {torch.bfloat16: torch.int16}  # dtypes numpy lacks, stored as their bit patterns


class ZarrRows(_RowsBase):
    """Rows in a zarr array on disk (chunks of ``chunk_rows`` rows); RAM holds one slab."""

    def __init__(self, rows: int, folder: str | os.PathLike, *, chunk_rows: int = 4) -> None:
        super().__init__(rows)
        self.folder = os.fspath(folder)
        self.chunk_rows = max(1, int(chunk_rows))
        self._array = None
        self._dtype: torch.dtype | None = None

    def _create(self, x: torch.Tensor) -> None:
        import zarr

        self._dtype = x.dtype
        stored = _BITS.get(x.dtype, x.dtype)
        shape = (x.shape[1], self.rows, *x.shape[3:])
        self._array = zarr.create_array(
            store=self.folder,
            shape=shape,
            chunks=(x.shape[1], min(self.chunk_rows, self.rows), *x.shape[3:]),
            dtype=torch.empty(0, dtype=stored).numpy().dtype,
            fill_value=0,
            compressors=None,
            overwrite=True,
        )

    def append(self, x: torch.Tensor) -> None:
        if self._array is None:
            self._create(x)
        self._like = x[:, :, :0].to("cpu")
        stored = x.detach().to("cpu")
        if stored.dtype in _BITS:
            stored = stored.view(_BITS[stored.dtype])
        self._array[:, self.end : self.end + x.shape[2]] = stored[0].numpy()
        self.end += x.shape[2]

    def fetch(self, lo: int, hi: int, device: torch.device | None = None) -> torch.Tensor:
        self._check(lo, hi)
        a, b = max(lo, 0), min(hi, self.rows)
        inside = None
        if b > a:
            inside = torch.from_numpy(np.ascontiguousarray(self._array[:, a:b]))[None]
            if self._dtype in _BITS:
                inside = inside.view(self._dtype)
            if device is not None:
                inside = inside.to(device)
        return self._assemble(lo, hi, inside, device)

    def release(self, below: int) -> None:
        self.start = max(self.start, int(below))

    def slabs(self) -> Iterator[torch.Tensor]:
        for a in range(0, self.end, self.chunk_rows):
            yield self.fetch(a, min(a + self.chunk_rows, self.end))

    @property
    def nbytes(self) -> int:
        return 0  # on disk
