"""Reassemble per-minicube predictions into one volume, writing every output chunk once.

The output is chunked on the **core grid**: chunk ``i`` along an axis covers voxels
``[i * core, (i + 1) * core)``, exactly the core of grid minicube ``i`` (the last chunk is cut at
the volume end; the virtual part of the last core is never written). Hence:

* ``blend="crop"``: every minicube writes its own core, which is one whole chunk, once. No
  read-modify-write, no lock: parallel writers (DDP ranks, each given a shard of the grid by
  :func:`grid_shard`) never touch the same chunk of a shared :class:`ZarrBackend`.
* ``blend="average" | "gaussian" | "hann"`` (:data:`~partseg.infer.blends.BLENDS`): every
  minicube also predicts ``overlap`` voxels of its margin on every side, weighted per voxel.
  Each chunk keeps a weighted sum and a weight sum *in RAM* until all minicubes that reach it have
  been aggregated, then it is normalised and written once. With the grid in C order (what
  :meth:`Partition.grid` yields) at most three slabs of chunks (the previous, current and next row
  of cores along Z) are pending, so RAM grows with the chunk and the slab, not with the volume.

Values are finalised per chunk with :mod:`partseg.infer.labels`: an optional per-voxel
activation (softmax over the class axis for K > 1 channels, sigmoid of the single foreground
channel for K == 1, or of every channel of a region model), then stored as ``"values"``
(probabilities or logits, fp16 by default to halve RAM/disk) or reduced to ``"labels"``
(uint8, :func:`labels_from_probabilities`: argmax over K, ``p > 0.5`` for one channel,
nnU-Net's region rule :func:`labels_from_regions` for regions), so a 512^3 multi-class output
never needs a float volume in RAM. Every activation acts on one voxel at a time, so finalising
chunk by chunk is exact.

Worked example, one axis: volume 10, core 4, overlap 2 -> chunks [0,4) [4,8) [8,10); minicube 1
predicts [2,10) and contributes to all three chunks; chunk 0 is complete after minicubes 0 and 1.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from partseg.errors import ConfigError, GeometryError
from partseg.geometry import Box, Minicube, Partition
from partseg.infer.blends import BLENDS, blend_weights
from partseg.infer.labels import (  # re-exported: stitching finalises values with them
    ACTIVATIONS,
    activate,
    check_activation,
    default_activation,
    labels_from_probabilities,
    labels_from_regions,
    sigmoid,
    softmax,
)

__all__ = [
    "ACTIVATIONS",
    "OUTPUTS",
    "Backend",
    "MemoryBackend",
    "Stitcher",
    "ZarrBackend",
    "activate",
    "blend_weights",
    "default_activation",
    "grid_shard",
    "labels_from_probabilities",
    "labels_from_regions",
    "sigmoid",
    "softmax",
]

OUTPUTS = ("values", "labels")

Shape = tuple[int, ...]


class Backend(Protocol):
    """Where finalised chunks land.

    Contract: ``write(index, array)`` receives the values of one whole chunk (clipped at the
    volume end) exactly once per chunk; ``index`` selects that chunk in the output array, whose
    axes are (K, Z, Y, X) for values and (Z, Y, X) for labels. ``result()`` returns the array.
    """

    def write(self, index: tuple[slice, ...], array: np.ndarray) -> None: ...

    def result(self) -> np.ndarray: ...


class MemoryBackend:
    """An in-RAM output array.

    Example:
        >>> b = MemoryBackend((2, 3), np.uint8)
        >>> b.write((slice(0, 1), slice(0, 3)), np.ones((1, 3), np.uint8))
        >>> b.result().sum()
        np.uint64(3)
    """

    def __init__(self, shape: Sequence[int], dtype: np.dtype | type) -> None:
        self.array = np.zeros(tuple(shape), dtype=dtype)

    def write(self, index: tuple[slice, ...], array: np.ndarray) -> None:
        self.array[index] = array

    def result(self) -> np.ndarray:
        return self.array


class ZarrBackend:
    """A zarr v3 array on disk whose chunks are the cores (one chunk written per core).

    Create it once (:meth:`create`), then any number of processes may :meth:`open` it and write
    disjoint chunks concurrently: chunks are never shared, so no lock is needed.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "p.zarr")
        >>> b = ZarrBackend.create(path, (2, 5, 4, 4), (2, 4, 4, 4), np.float16)
        >>> b.array.chunks
        (2, 4, 4, 4)
    """

    def __init__(self, array) -> None:  # array: zarr.Array
        self.array = array

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        shape: Sequence[int],
        chunks: Sequence[int],
        dtype: np.dtype | type,
        attrs: dict | None = None,
    ) -> ZarrBackend:
        """Create (overwriting) the output array at ``path`` with the given chunk shape."""
        import zarr

        array = zarr.create_array(
            store=str(path),
            shape=tuple(int(s) for s in shape),
            chunks=tuple(int(c) for c in chunks),
            dtype=np.dtype(dtype),
            fill_value=0,
            overwrite=True,
        )
        if attrs:
            array.attrs.update(attrs)
        return cls(array)

    @classmethod
    def open(cls, path: str | os.PathLike) -> ZarrBackend:
        """Open an existing output array for writing more chunks (another rank's share)."""
        import zarr

        return cls(zarr.open_array(str(path), mode="r+"))

    def write(self, index: tuple[slice, ...], array: np.ndarray) -> None:
        self.array[index] = array

    def result(self):  # -> zarr.Array
        return self.array


def grid_shard(cubes: Sequence[Minicube], rank: int, world_size: int) -> list[Minicube]:
    """The minicubes one of ``world_size`` parallel writers handles (round robin, disjoint)."""
    if not 0 <= rank < world_size:
        raise GeometryError(f"rank {rank} is outside 0..{world_size - 1}")
    return list(cubes[rank::world_size])


@dataclass
class _Pending:
    weighted: np.ndarray  # (K, *chunk) float32
    weight: np.ndarray  # (*chunk) float32
    remaining: int


class Stitcher:
    """Aggregate per-minicube network outputs into a volume; see the module docstring.

    Args:
        shape: spatial shape (Z, Y, X) of the volume.
        partition: the grid the minicubes come from (chunk = core).
        channels: K, the number of output channels of the network.
        blend: ``crop`` (core only, each chunk written once by its own minicube), ``average``,
            ``gaussian`` or ``hann`` (overlapping predictions weighted per voxel).
        overlap: voxels of the margin predicted too on every side, per axis; at most the margin;
            default: the smaller margin for blends, 0 for crop. An axis whose core is 1 (the
            slice axis of 2D models) never overlaps; a blend needs overlap on some axis.
        activation: ``softmax`` over the class axis at finalisation, ``sigmoid`` per voxel (one
            foreground channel, K == 1, or one channel per region) or ``none`` (keep logits);
            default (None): :func:`default_activation`. Softmax needs K > 1; sigmoid needs
            K == 1 or ``region_order``.
        output: ``values`` (K, Z, Y, X) in ``dtype`` or ``labels`` (Z, Y, X) uint8 from
            :func:`labels_from_probabilities` (one channel or regions need
            ``activation="sigmoid"``).
        dtype: dtype of stored values (float16 halves the RAM of probabilities).
        backend: where chunks go; default an in-memory array.
        region_order: the class id each output channel (region) writes
            (:func:`labels_from_regions`); None for class outputs.

    Example:
        >>> from partseg.geometry import make_partition
        >>> p = make_partition((2, 2), 1, ndim=2)
        >>> s = Stitcher((3, 4), p, channels=1, activation="none", dtype=np.float32)
        >>> for cube in p.grid((3, 4)):
        ...     s.aggregate(np.full((1, 2, 2), cube.origin[1], np.float32), cube)
        >>> s.finalize()[0].tolist()
        [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]]
    """

    def __init__(
        self,
        shape: Sequence[int],
        partition: Partition,
        channels: int,
        *,
        blend: str = "crop",
        overlap: int | Sequence[int] | None = None,
        activation: str | None = None,
        output: str = "values",
        dtype: np.dtype | type = np.float16,
        backend: Backend | None = None,
        region_order: Sequence[int] | None = None,
    ) -> None:
        try:
            BLENDS.check(blend, key="blend")
        except ConfigError as err:
            raise GeometryError(str(err)) from None
        if activation is None:
            activation = default_activation(channels, regions=region_order is not None)
        _check_choice("activation", activation, ACTIVATIONS)
        _check_choice("output", output, OUTPUTS)
        check_activation(int(channels), activation, output, region_order)
        self.region_order = None if region_order is None else tuple(region_order)
        self.shape = tuple(int(s) for s in shape)
        self.partition = partition
        self.channels = int(channels)
        self.blend = blend
        self.activation = activation
        self.output = output
        self.dtype = np.dtype(dtype)
        self.overlap = self._resolve_overlap(overlap)
        self.counts = partition.grid_shape(self.shape)
        if backend is None:
            backend = MemoryBackend(self.output_shape, self.output_dtype)
        self.backend = backend
        self._pending: dict[Shape, _Pending] = {}
        self._written: set[Shape] = set()
        self._contributors = [
            _contributors_per_chunk(s, c, o, n)
            for s, c, o, n in zip(
                self.shape, partition.core, self.overlap, self.counts, strict=True
            )
        ]
        region = tuple(c + 2 * o for c, o in zip(partition.core, self.overlap, strict=True))
        self._weights = blend_weights(region, blend)

    # -- geometry --------------------------------------------------------------------------
    @property
    def output_shape(self) -> Shape:
        """(K, Z, Y, X) for values, (Z, Y, X) for labels."""
        return self.shape if self.output == "labels" else (self.channels, *self.shape)

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.output == "labels" else self.dtype

    @property
    def output_chunks(self) -> Shape:
        """Chunk shape of the output array: the core (with all classes in one chunk)."""
        core = self.partition.core
        return core if self.output == "labels" else (self.channels, *core)

    def region(self, cube: Minicube) -> Box:
        """The box (volume coordinates) whose values :meth:`aggregate` expects for ``cube``."""
        start = tuple(o - v for o, v in zip(cube.origin, self.overlap, strict=True))
        size = tuple(c + 2 * v for c, v in zip(cube.core, self.overlap, strict=True))
        return Box(start, size)

    def _resolve_overlap(self, overlap: int | Sequence[int] | None) -> Shape:
        p = self.partition
        limit = tuple(min(b, a) for b, a in zip(p.margin_before, p.margin_after, strict=True))
        if self.blend == "crop":
            return (0,) * p.ndim
        if overlap is None:
            values = limit
        elif isinstance(overlap, int):
            values = (overlap,) * p.ndim
        else:
            values = tuple(int(v) for v in overlap)
        values = tuple(0 if c == 1 else v for v, c in zip(values, p.core, strict=True))
        if len(values) != p.ndim or any(v < 0 or v > m for v, m in zip(values, limit, strict=True)):
            raise GeometryError(
                f"overlap {values} must be between 0 and the margin {limit} per axis; "
                "grow the margins by the overlap (the predictor does) or use a smaller overlap"
            )
        if not any(values):
            raise GeometryError(
                f"blend {self.blend!r} with overlap 0 on every axis equals crop; give an overlap "
                "(and margins that hold it) or use blend 'crop'"
            )
        return values

    # -- aggregation -----------------------------------------------------------------------
    def aggregate(self, values: np.ndarray, cube: Minicube) -> None:
        """Add the network output of one minicube.

        Args:
            values: (K, *region.size) float array over :meth:`region` of ``cube``.
            cube: the minicube (from ``partition.grid(shape)``) that produced it.
        """
        region = self.region(cube)
        expected = (self.channels, *region.size)
        if tuple(values.shape) != expected:
            raise GeometryError(
                f"stitcher expects values of shape {expected} for the minicube at "
                f"{cube.origin}, got {tuple(values.shape)}"
            )
        if self.blend == "crop":
            self._write_core(values, cube)
            return
        weighted = values.astype(np.float32, copy=False) * self._weights
        for chunk in self._chunks_touched(region):
            self._add(chunk, region, weighted)

    def _write_core(self, values: np.ndarray, cube: Minicube) -> None:
        chunk = tuple(o // c for o, c in zip(cube.origin, self.partition.core, strict=True))
        inside, where = cube.core_inside(self.shape)
        self._emit(chunk, inside, values[(slice(None), *where)].astype(np.float32, copy=False))

    def _chunks_touched(self, region: Box) -> Iterable[Shape]:
        ranges = []
        for a, (lo, hi) in enumerate(zip(region.start, region.stop, strict=True)):
            core, n = self.partition.core[a], self.counts[a]
            first = max(0, lo // core)
            last = min(n - 1, (min(hi, self.shape[a]) - 1) // core)
            ranges.append(range(first, last + 1))
        return itertools.product(*ranges)

    def _chunk_box(self, chunk: Shape) -> Box:
        start = tuple(i * c for i, c in zip(chunk, self.partition.core, strict=True))
        stop = tuple(
            min(a + c, s) for a, c, s in zip(start, self.partition.core, self.shape, strict=True)
        )
        return Box(start, tuple(b - a for a, b in zip(start, stop, strict=True)))

    def _add(self, chunk: Shape, region: Box, weighted: np.ndarray) -> None:
        box = self._chunk_box(chunk)
        pending = self._pending.get(chunk)
        if pending is None:
            if chunk in self._written:
                raise GeometryError(
                    f"output chunk {chunk} received a minicube after it was written"
                )
            remaining = math.prod(int(self._contributors[a][i]) for a, i in enumerate(chunk))
            pending = _Pending(
                np.zeros((self.channels, *box.size), np.float32),
                np.zeros(box.size, np.float32),
                remaining,
            )
            self._pending[chunk] = pending
        lo = tuple(max(a, b) for a, b in zip(box.start, region.start, strict=True))
        hi = tuple(min(a, b) for a, b in zip(box.stop, region.stop, strict=True))
        in_chunk = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, box.start, strict=True))
        in_region = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, region.start, strict=True))
        pending.weighted[(slice(None), *in_chunk)] += weighted[(slice(None), *in_region)]
        pending.weight[in_chunk] += self._weights[in_region]
        pending.remaining -= 1
        if pending.remaining == 0:
            del self._pending[chunk]
            self._emit(chunk, box, pending.weighted / pending.weight)

    def _emit(self, chunk: Shape, box: Box, values: np.ndarray) -> None:
        """Finalise one chunk (activation, dtype or labels) and write it once."""
        if chunk in self._written:
            raise GeometryError(f"output chunk {chunk} (voxels {box}) was predicted twice")
        self._written.add(chunk)
        values = activate(values, self.activation)
        if self.output == "labels":
            self.backend.write(box.slices(), labels_from_probabilities(values, self.region_order))
        else:
            self.backend.write((slice(None), *box.slices()), values.astype(self.dtype))

    def finalize(self, *, complete: bool = True):
        """Return the output array (numpy for the memory backend, zarr for the zarr one).

        Args:
            complete: check that every chunk was written (set False for one rank's shard).

        Raises:
            GeometryError: some chunks never received all their minicubes.
        """
        if complete:
            missing = math.prod(self.counts) - len(self._written)
            if missing or self._pending:
                raise GeometryError(
                    f"{missing} of {math.prod(self.counts)} output chunks were not predicted "
                    f"({len(self._pending)} partly); aggregate every minicube of the grid"
                )
        return self.backend.result()


def _contributors_per_chunk(size: int, core: int, overlap: int, count: int) -> np.ndarray:
    """Per chunk index along one axis: how many grid minicubes' regions reach its voxels."""
    result = np.zeros(count, np.int64)
    for i in range(count):
        lo, hi = i * core, min((i + 1) * core, size)
        for j in range(count):
            if j * core - overlap < hi and (j + 1) * core + overlap > lo:
                result[i] += 1
    return result


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise GeometryError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
