"""Minicube geometry shared by training and inference.

A *minicube* is a **core** box (what the network predicts and the loss covers) plus a context
**margin** on each side; together they form the **input box** that is read from the store. One
frozen dataclass, :class:`Minicube`, describes both, so the sampler, the dataset, the predictor
and the stitcher cannot disagree about where a partition lies.

Rules (documented once, used everywhere):

* **Zero pad rule.** Input boxes may reach past the volume; voxels outside it read as 0 in the
  image and in the label and are masked out of the loss. The volume padded with these zeros by
  the margins (:func:`padded_shape`) and run once gives the partitioned logits exactly; the
  whole-volume reference ``model(volume)`` pads only the end of each axis to the stride, so it
  agrees away from the border (see :mod:`partseg.infer.partitions`).
* **Virtual padding at the last core.** Cores tile the volume on a regular grid of pitch
  ``core``; the last core along an axis may reach past the volume end. Its outside part is never
  written and never counted, so every voxel lies in exactly one core.
* **Alignment.** With a network of total stride ``s`` (``2 ** poolings``), core sizes are
  multiples of ``s`` and the two margins of an axis are grown (never shrunk) until their sum is a
  multiple of ``s``. Every input box then has a size divisible by ``s`` and starts on a multiple
  of ``s`` relative to the *padded* volume origin (the volume with ``margin_before`` zeros in
  front), so pooling windows fall on the same voxels as in whole-volume inference of the padded
  volume.

Worked example (the BraTS paper's sizes): core 80 x 96 x 96, margin 10 per side, stride 8. The
margins sum to 20 per axis, rounded up to 24, split 12 + 12: the input box is 104 x 120 x 120 and
the rounding is reported in :attr:`Partition.notes`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from partseg.errors import GeometryError

Shape = tuple[int, ...]


def _as_tuple(values: int | Sequence[int], ndim: int, name: str) -> Shape:
    """Broadcast an int to ``ndim`` axes and check every value is a non-negative integer."""
    if isinstance(values, int | float):
        values = (values,) * ndim
    values = tuple(values)
    if len(values) != ndim:
        raise GeometryError(f"{name} has {len(values)} values {values}, expected {ndim}")
    for value in values:
        if isinstance(value, bool) or not float(value).is_integer():
            raise GeometryError(f"{name} must be whole voxels, got {values}")
        if value < 0:
            raise GeometryError(f"{name} must not be negative, got {values}")
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in voxel coordinates, (Z, Y, X) for 3D, (Y, X) for 2D.

    The box may start at negative coordinates or reach past the volume: :meth:`clip` says which
    part lies inside and where that part lands in an array of the box's size.

    Example:
        >>> box = Box((-2, 0, 5), (4, 3, 3))
        >>> box.stop
        (2, 3, 8)
        >>> inside, where = box.clip((10, 10, 6))
        >>> inside
        Box(start=(0, 0, 5), size=(2, 3, 1))
        >>> where
        (slice(2, 4, None), slice(0, 3, None), slice(0, 1, None))
    """

    start: Shape
    size: Shape

    def __post_init__(self) -> None:
        if len(self.start) != len(self.size):
            raise GeometryError(f"box start {self.start} and size {self.size} differ in length")
        if any(s < 0 for s in self.size):
            raise GeometryError(f"box size must not be negative, got {self.size}")

    @classmethod
    def whole(cls, shape: Sequence[int]) -> Box:
        """The box covering a whole volume of ``shape``."""
        return cls((0,) * len(shape), tuple(int(s) for s in shape))

    @property
    def ndim(self) -> int:
        return len(self.size)

    @property
    def stop(self) -> Shape:
        return tuple(a + s for a, s in zip(self.start, self.size, strict=True))

    @property
    def volume(self) -> int:
        return math.prod(self.size)

    def slices(self) -> tuple[slice, ...]:
        """Slices selecting this box from an array whose origin is the volume origin."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    def shift(self, offset: Sequence[int]) -> Box:
        """The same box moved by ``offset``."""
        return Box(tuple(a + o for a, o in zip(self.start, offset, strict=True)), self.size)

    def clip(self, shape: Sequence[int]) -> tuple[Box, tuple[slice, ...]]:
        """Intersect with the volume ``[0, shape)``.

        Returns:
            The inside part as a Box, and the slices where it lands in an array of ``self.size``.

        Raises:
            GeometryError: the box does not touch the volume.
        """
        lo = tuple(max(a, 0) for a in self.start)
        hi = tuple(min(b, int(s)) for b, s in zip(self.stop, shape, strict=True))
        if any(h <= low for low, h in zip(lo, hi, strict=True)):
            raise GeometryError(f"box {self} lies outside the volume of shape {tuple(shape)}")
        inside = Box(lo, tuple(h - low for low, h in zip(lo, hi, strict=True)))
        where = tuple(slice(low - a, h - a) for low, h, a in zip(lo, hi, self.start, strict=True))
        return inside, where


@dataclass(frozen=True)
class Minicube:
    """A core box plus its context margin: the unit of training and of inference.

    Attributes:
        origin: first voxel of the core, in volume coordinates.
        core: core size per axis.
        margin_before: context voxels before the core, per axis.
        margin_after: context voxels after the core, per axis.

    Example:
        >>> cube = Minicube(origin=(0, 80), core=(80, 96), margin_before=(12, 12),
        ...                 margin_after=(12, 12))
        >>> cube.input_box
        Box(start=(-12, 68), size=(104, 120))
        >>> cube.core_in_input
        (slice(12, 92, None), slice(12, 108, None))
    """

    origin: Shape
    core: Shape
    margin_before: Shape
    margin_after: Shape

    def __post_init__(self) -> None:
        n = len(self.core)
        if not (len(self.origin) == len(self.margin_before) == len(self.margin_after) == n):
            raise GeometryError(f"minicube fields differ in dimensionality: {self}")

    @property
    def ndim(self) -> int:
        return len(self.core)

    @property
    def core_box(self) -> Box:
        return Box(self.origin, self.core)

    @property
    def input_box(self) -> Box:
        """The box read from the store: the core grown by the margins."""
        start = tuple(o - m for o, m in zip(self.origin, self.margin_before, strict=True))
        size = tuple(
            b + c + a
            for b, c, a in zip(self.margin_before, self.core, self.margin_after, strict=True)
        )
        return Box(start, size)

    @property
    def core_in_input(self) -> tuple[slice, ...]:
        """Slices of the core inside an array of the input box's size."""
        return tuple(slice(m, m + c) for m, c in zip(self.margin_before, self.core, strict=True))

    def core_inside(self, shape: Sequence[int]) -> tuple[Box, tuple[slice, ...]]:
        """The part of the core inside the volume, and where it lies in the core array.

        The last core along an axis may reach past the volume (virtual padding); that part is
        neither written by the stitcher nor counted by the loss.
        """
        return self.core_box.clip(shape)

    def outside(self, shape: Sequence[int]) -> tuple[Shape, Shape]:
        """Voxels of the input box outside the volume, before and after, per axis."""
        box = self.input_box
        before = tuple(max(0, -a) for a in box.start)
        after = tuple(max(0, b - int(s)) for b, s in zip(box.stop, shape, strict=True))
        return before, after


def align_margin(
    before: Sequence[int], after: Sequence[int], stride: int | Sequence[int]
) -> tuple[Shape, Shape]:
    """Grow each axis' margins until ``before + after`` is a multiple of that axis' stride.

    The extra voxels are split as evenly as possible, the odd one going after the core. Margins
    are never rounded down.

    Example:
        >>> align_margin((10, 10, 10), (10, 10, 10), 8)
        ((12, 12, 12), (12, 12, 12))
        >>> align_margin((0, 3), (0, 2), 4)
        ((0, 4), (0, 4))
    """
    strides = _strides(stride, len(before))
    new_before: list[int] = []
    new_after: list[int] = []
    for b, a, s in zip(before, after, strides, strict=True):
        extra = -(b + a) % s
        new_before.append(b + extra // 2)
        new_after.append(a + extra - extra // 2)
    return tuple(new_before), tuple(new_after)


def _strides(stride: int | Sequence[int], ndim: int) -> Shape:
    """Broadcast a stride to ``ndim`` axes (2D slices use stride 1 along the slice axis)."""
    strides = (stride,) * ndim if isinstance(stride, int) else tuple(stride)
    if len(strides) != ndim or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in strides
    ):
        raise GeometryError(f"network stride must be positive integers per axis, got {stride!r}")
    return strides


@dataclass(frozen=True)
class Partition:
    """How a volume is cut: core size and margins per side, aligned to the network stride.

    Build it with :func:`make_partition`, which validates and aligns, and reports any rounding
    in :attr:`notes` so callers can tell the user.

    Attributes:
        core: core size per axis (multiples of ``stride``).
        margin_before: context before the core per axis.
        margin_after: context after the core per axis (``before + after`` divisible by stride).
        stride: the network's total stride per axis (1 along the slice axis of 2D models).
        notes: human-readable messages about rounding that was applied.
    """

    core: Shape
    margin_before: Shape
    margin_after: Shape
    stride: Shape
    notes: tuple[str, ...] = ()

    @property
    def ndim(self) -> int:
        return len(self.core)

    @property
    def input_size(self) -> Shape:
        return tuple(
            b + c + a
            for b, c, a in zip(self.margin_before, self.core, self.margin_after, strict=True)
        )

    def at(self, origin: Sequence[int]) -> Minicube:
        """The minicube whose core starts at ``origin``."""
        return Minicube(
            tuple(int(o) for o in origin), self.core, self.margin_before, self.margin_after
        )

    def grid_shape(self, shape: Sequence[int]) -> Shape:
        """Number of cores per axis needed to cover a volume of ``shape``."""
        return tuple(-(-int(s) // c) for s, c in zip(shape, self.core, strict=True))

    def grid(self, shape: Sequence[int]) -> list[Minicube]:
        """Every minicube of the regular grid tiling ``shape``; see :func:`iter_grid`."""
        return list(iter_grid(self, shape))


def make_partition(
    core: int | Sequence[int],
    margin: int | Sequence[int] | Sequence[Sequence[int]] = 0,
    stride: int | Sequence[int] = 1,
    ndim: int | None = None,
) -> Partition:
    """Validate and align a core size and margin to a network stride.

    Args:
        core: core size per axis (an int broadcasts to ``ndim`` axes).
        margin: context per axis, the same on both sides, or ``[(before, after), ...]`` per axis.
        stride: the network's total stride ``2 ** poolings`` (an int, or one per axis: a 2D
            model cutting slices along Z has stride ``(1, s, s)``); margins grow until each
            axis' ``before + after`` is a multiple of it.
        ndim: number of spatial axes; inferred from ``core`` when it is a sequence.

    Raises:
        GeometryError: negative or fractional sizes, an empty core, or a core size that is not
            a multiple of the stride (pick the next multiple, which the message names).

    Example:
        >>> p = make_partition((80, 96, 96), 10, stride=8)
        >>> p.input_size
        (104, 120, 120)
        >>> p.notes[0]
        'margin rounded up from (10, 10, 10) to (12, 12, 12) per side to align with stride 8'
    """
    if ndim is None:
        if isinstance(core, int):
            raise GeometryError("give ndim when core is a single int")
        ndim = len(tuple(core))
    strides = _strides(stride, ndim)
    cores = _as_tuple(core, ndim, "core")
    if any(c == 0 for c in cores):
        raise GeometryError(f"core size must be positive, got {cores}")
    if any(c % s for c, s in zip(cores, strides, strict=True)):
        hint = tuple(-(-c // s) * s for c, s in zip(cores, strides, strict=True))
        raise GeometryError(
            f"core size {cores} is not a multiple of the network stride {stride}; "
            f"use {hint} (or a model with fewer poolings)"
        )
    before, after = _split_margin(margin, ndim)
    aligned_before, aligned_after = align_margin(before, after, strides)
    shown = strides[0] if len(set(strides)) == 1 else strides
    notes: list[str] = []
    if (aligned_before, aligned_after) != (before, after):
        if before == after:
            notes.append(
                f"margin rounded up from {before} to {aligned_before} per side "
                f"to align with stride {shown}"
            )
        else:
            notes.append(
                f"margins rounded up from {before}/{after} to {aligned_before}/{aligned_after} "
                f"(before/after) to align with stride {shown}"
            )
    return Partition(cores, aligned_before, aligned_after, strides, tuple(notes))


def _split_margin(
    margin: int | Sequence[int] | Sequence[Sequence[int]], ndim: int
) -> tuple[Shape, Shape]:
    """Accept ``m``, ``(m_z, m_y, m_x)`` or ``((b_z, a_z), ...)`` and return (before, after)."""
    if isinstance(margin, int | float):
        same = _as_tuple(margin, ndim, "margin")
        return same, same
    items = list(margin)
    if items and all(isinstance(m, Sequence) for m in items):
        if len(items) != ndim or any(len(m) != 2 for m in items):
            raise GeometryError(f"per-side margin needs {ndim} (before, after) pairs, got {margin}")
        before = _as_tuple([m[0] for m in items], ndim, "margin")
        after = _as_tuple([m[1] for m in items], ndim, "margin")
        return before, after
    same = _as_tuple(items, ndim, "margin")
    return same, same


def iter_grid(partition: Partition, shape: Sequence[int]) -> Iterator[Minicube]:
    """Yield the minicubes whose cores tile a volume of ``shape``, in C order.

    Cores start at multiples of the core size; the last core per axis may reach past the volume
    (virtual padding), so every voxel lies in exactly one core.

    Worked example, one axis: shape 10, core 4 -> cores [0, 4), [4, 8), [8, 12); the last core's
    voxels 10 and 11 are virtual and never written.
    """
    shape = _as_tuple(shape, partition.ndim, "volume shape")
    if any(s == 0 for s in shape):
        raise GeometryError(f"cannot partition an empty volume of shape {shape}")
    counts = partition.grid_shape(shape)
    for index in itertools.product(*(range(n) for n in counts)):
        yield partition.at(tuple(i * c for i, c in zip(index, partition.core, strict=True)))


def padded_shape(shape: Sequence[int], partition: Partition) -> Shape:
    """Shape of the volume padded by the grid's zero pad rule (the union of all input boxes).

    The volume gets ``margin_before`` zeros in front and zeros after it up to the end of the last
    core plus ``margin_after``: the union of all input boxes. Its size is divisible by the stride
    because cores are multiples of it and so is ``margin_before + margin_after``.

    Example:
        >>> padded_shape((10, 7), make_partition((4, 4), 1, stride=4))
        (16, 12)
    """
    counts = partition.grid_shape(shape)
    return tuple(
        b + n * c + a
        for b, n, c, a in zip(
            partition.margin_before, counts, partition.core, partition.margin_after, strict=True
        )
    )
