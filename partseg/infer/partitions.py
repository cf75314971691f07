"""The partitions prediction runs on, derived from the trained one.

* :func:`context_partition`: the trained partition, or the ``--margin`` given (voxels, or
  ``exact`` = :func:`exact_partition`).
* :func:`blend_partition`: that partition with every margin grown by the blend overlap, so the
  network reads the predicted region (core + overlap) plus the full context margin.
* :func:`whole_partition`: the one minicube of the whole-volume reference (``--partition
  none``): ``model(volume)`` as a user with enough memory would run it, the volume with the
  trained margin of zeros around it (what training's minicubes saw beyond a volume) and zeros
  at the end up to a multiple of the network stride.

2D models keep the trained context slices on their slice axis in every partition: they are the
network's input channels.

Example:
    >>> from partseg.dataset import InputLayout
    >>> from partseg.geometry import make_partition
    >>> trained = make_partition((8, 8, 8), 2, stride=4)
    >>> whole_partition(trained, (10, 7, 9), InputLayout(3)).core     # ends padded to 4
    (12, 8, 12)
    >>> whole_partition(trained, (10, 7, 9), InputLayout(3)).margin_before  # trained: 2 + 2
    (2, 2, 2)
    >>> blend_partition(trained, (2, 2, 2)).margin_before               # context 2 + overlap 2
    (4, 4, 4)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from partseg.errors import ConfigError, GeometryError
from partseg.geometry import Partition, make_partition

Margin = int | str | None  # voxels per side, "exact", or None (the trained margin)


def parse_margin(text: str | int | None) -> Margin:
    """A ``--margin`` value: whole voxels, ``exact`` or None (keep the trained margin).

    Example:
        >>> parse_margin("12"), parse_margin("exact"), parse_margin(None)
        (12, 'exact', None)
    """
    if text is None or text == "exact":
        return text
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ConfigError(
            f"--margin must be a whole number of voxels or 'exact', got {text!r}"
        ) from None
    if value < 0:
        raise ConfigError(f"--margin must not be negative, got {value}")
    return value


def exact_partition(
    model: Any,
    core: int | Sequence[int] | None,
    layout: Any,
    *,
    base: Partition | None = None,
) -> Partition:
    """A partition whose margins hold half the receptive field: seam-free crop stitching.

    Each margin is ``ceil(receptive_field / 2)`` rounded up to a multiple of the network stride
    **per side**, so every input box starts on the stride grid of the volume itself and the
    pooling windows of every minicube fall where they fall in ``model(volume)``.

    Args:
        model: a partseg ``SegmentationModel`` (``receptive_field``, ``total_stride``).
        core: core size (Z, Y, X); None takes ``base.core``. 2D models need 1 on the slice axis.
        layout: the ``InputLayout`` (``spatial_dims``, ``slice_axis``).
        base: the trained partition; 2D models keep its slice-axis margin (the context slices
            folded into channels, which the network's input width depends on).

    Example:
        >>> # exact_partition(model, (64, 64, 64), InputLayout()).margin_before
        >>> # (48, 48, 48) for a receptive field of 88 (half 44) and stride 8
    """
    if core is None:
        if base is None:
            raise GeometryError("exact_partition needs a core size or a base partition")
        core = base.core
    cores = (core,) * 3 if isinstance(core, int) else tuple(int(c) for c in core)
    stride = int(model.total_stride)
    half = math.ceil(math.ceil(int(model.receptive_field) / 2) / stride) * stride
    margins: list[tuple[int, int]] = [(half, half)] * len(cores)
    strides = [stride] * len(cores)
    if int(layout.spatial_dims) == 2:
        axis = int(layout.slice_axis)
        context = (0, 0) if base is None else (base.margin_before[axis], base.margin_after[axis])
        margins[axis] = context
        strides[axis] = 1
    return make_partition(cores, margins, tuple(strides), ndim=len(cores))


def context_partition(model: Any, trained: Partition, layout: Any, margin: Margin) -> Partition:
    """The partition of ``--margin``: trained (None), ``exact``, or N voxels per side.

    2D models keep the trained context slices on the slice axis.
    """
    if margin is None:
        return trained
    if margin == "exact":
        return exact_partition(model, trained.core, layout, base=trained)
    value = parse_margin(margin)
    assert isinstance(value, int)
    margins = [(value, value)] * trained.ndim
    if int(layout.spatial_dims) == 2:  # the slice axis carries the trained context slices
        axis = int(layout.slice_axis)
        margins[axis] = (trained.margin_before[axis], trained.margin_after[axis])
    return make_partition(trained.core, margins, trained.stride, ndim=trained.ndim)


def blend_partition(
    partition: Partition, overlap: Sequence[int], *, per_side: bool = False
) -> Partition:
    """``partition`` with every margin grown by ``overlap`` voxels (the blend's region).

    Args:
        partition: the context partition.
        overlap: voxels each predicted region reaches beyond its core, per axis.
        per_side: round each side up to a multiple of the stride (keeps an exact partition's
            input boxes on the volume's stride grid); otherwise only the sum of the two
            margins is aligned, as :func:`~partseg.geometry.make_partition` does.
    """
    if not any(overlap):
        return partition
    pairs = []
    for b, a, o, s in zip(
        partition.margin_before, partition.margin_after, overlap, partition.stride, strict=True
    ):
        before, after = b + int(o), a + int(o)
        if per_side:
            before, after = -(-before // s) * s, -(-after // s) * s
        pairs.append((before, after))
    return make_partition(partition.core, pairs, partition.stride, ndim=partition.ndim)


def whole_partition(partition: Partition, shape: Sequence[int], layout: Any) -> Partition:
    """The one-minicube partition of ``model(volume)``: the volume with the trained margin of
    zeros on each side (the input training's minicubes saw beyond a volume), then zeros at the
    end up to the stride.

    Per axis the core is the volume size rounded up to a multiple of the stride and the margins
    are the trained ones (their sum is a multiple of the stride), so the only input box is
    ``[-margin_before, padded + margin_after)``. A model trained without margin runs the plain
    volume. The slice axis of a 2D model keeps core 1 and the trained context slices: the
    reference runs whole slices.
    """
    slice_axis = int(layout.slice_axis) if int(layout.spatial_dims) == 2 else None
    core, margins = [], []
    for a, (n, s) in enumerate(zip(shape, partition.stride, strict=True)):
        margins.append((partition.margin_before[a], partition.margin_after[a]))
        core.append(1 if a == slice_axis else -(-int(n) // s) * s)
    return make_partition(tuple(core), margins, partition.stride, ndim=partition.ndim)
