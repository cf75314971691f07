"""Tests of partseg.geometry: tiling, alignment, margins and bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from partseg.errors import GeometryError
from partseg.geometry import (
    Box,
    Minicube,
    align_margin,
    iter_grid,
    make_partition,
    padded_shape,
)

SHAPES_2D = [(1, 1), (5, 7), (8, 8), (9, 16), (17, 3)]
SHAPES_3D = [(1, 1, 1), (5, 7, 9), (8, 8, 8), (13, 4, 6), (3, 17, 10)]


def _cores(ndim: int, stride: int) -> list[tuple[int, ...]]:
    sizes = [stride, 2 * stride, 3 * stride]
    return [tuple(c) for c in itertools.product(sizes, repeat=ndim)][:6]


@pytest.mark.parametrize(("ndim", "shapes"), [(2, SHAPES_2D), (3, SHAPES_3D)], ids=["2d", "3d"])
@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize("margin", [0, 1, 3])
def test_grid_covers_every_voxel_exactly_once(ndim, shapes, stride, margin):
    for shape, core in itertools.product(shapes, _cores(ndim, stride)):
        partition = make_partition(core, margin, stride, ndim)
        count = np.zeros(shape, dtype=np.int32)
        cubes = partition.grid(shape)
        assert len(cubes) == int(np.prod(partition.grid_shape(shape)))
        for cube in cubes:
            inside, where = cube.core_inside(shape)
            count[inside.slices()] += 1
            # the part of the core inside the volume sits at the start of the core array
            assert all(w.start == 0 for w in where)
        assert (count == 1).all(), (shape, core)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("stride", [1, 2, 8])
@pytest.mark.parametrize("margin", [0, 1, 5, 10, (3, 7)])
def test_input_boxes_align_to_stride_from_padded_origin(ndim, stride, margin):
    if isinstance(margin, tuple):
        margin = [margin] * ndim  # (before, after) per axis
    partition = make_partition(2 * stride, margin, stride, ndim)
    shape = (3 * stride + 1,) * ndim
    for cube in partition.grid(shape):
        box = cube.input_box
        for axis in range(ndim):
            assert (box.start[axis] + partition.margin_before[axis]) % stride == 0
            assert box.size[axis] % stride == 0
    # the padded reference volume is divisible by the stride too
    assert all(s % stride == 0 for s in padded_shape(shape, partition))


@pytest.mark.parametrize("ndim", [2, 3])
def test_margins_are_never_rounded_down_and_rounding_is_noted(ndim):
    for before, after, stride in itertools.product(range(6), range(6), (1, 2, 4, 8)):
        new_before, new_after = align_margin((before,) * ndim, (after,) * ndim, stride)
        for b, a in zip(new_before, new_after, strict=True):
            assert b >= before and a >= after
            assert (b + a) % stride == 0
            assert b + a - (before + after) < stride  # the smallest growth that aligns
    rounded = make_partition((8,) * ndim, 3, stride=8)
    assert rounded.margin_before == (4,) * ndim and rounded.margin_after == (4,) * ndim
    assert len(rounded.notes) == 1 and "rounded up" in rounded.notes[0]
    exact = make_partition((8,) * ndim, 4, stride=8)
    assert exact.notes == ()


def test_worked_example_brats_sizes():
    partition = make_partition((80, 96, 96), 10, stride=8)
    assert partition.input_size == (104, 120, 120)
    assert partition.margin_before == (12, 12, 12)
    assert partition.margin_after == (12, 12, 12)
    assert "(10, 10, 10)" in partition.notes[0] and "(12, 12, 12)" in partition.notes[0]
    cube = partition.at((80, 96, 0))
    assert cube.input_box == Box((68, 84, -12), (104, 120, 120))
    assert cube.core_in_input == (slice(12, 92), slice(12, 108), slice(12, 108))
    # a BraTS volume (Z, Y, X) = (155, 240, 240): 2 x 3 x 3 cores
    assert partition.grid_shape((155, 240, 240)) == (2, 3, 3)


def test_per_axis_stride_for_2d_slices():
    partition = make_partition((1, 16, 16), ((2, 2), (5, 5), (5, 5)), stride=(1, 16, 16))
    assert partition.margin_before == (2, 8, 8) and partition.margin_after == (2, 8, 8)
    assert partition.input_size == (5, 32, 32)
    assert len(partition.grid((7, 20, 20))) == 7 * 2 * 2


@pytest.mark.parametrize("ndim", [2, 3])
def test_box_clip_places_inside_part(ndim):
    shape = (6,) * ndim
    volume = np.arange(6**ndim).reshape(shape)
    box = Box((-2,) + (3,) * (ndim - 1), (5,) * ndim)
    inside, where = box.clip(shape)
    out = np.full(box.size, -1)
    out[where] = volume[inside.slices()]
    padded = np.pad(volume, 5, constant_values=-1)
    expected = padded[tuple(slice(a + 5, b + 5) for a, b in zip(box.start, box.stop, strict=True))]
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(GeometryError):
        Box((6,) * ndim, (2,) * ndim).clip(shape)


def test_minicube_outside_counts_padding():
    cube = Minicube((0, 8), (4, 4), (2, 2), (2, 2))
    assert cube.outside((10, 10)) == ((2, 0), (0, 4))


@pytest.mark.parametrize(
    ("core", "margin", "stride"),
    [
        ((8, 8, 8), -1, 8),  # negative margin
        ((-8, 8, 8), 0, 8),  # negative core
        ((8.5, 8, 8), 0, 1),  # non-integer core
        ((8, 8, 8), 1.5, 1),  # non-integer margin
        ((0, 8, 8), 0, 1),  # zero core
        ((12, 8, 8), 0, 8),  # core not a multiple of the stride
        ((8, 8, 8), 0, 0),  # zero stride
        ((8, 8, 8), 0, (8, 8)),  # stride of the wrong length
        ((8, 8), 0, 8),  # given ndim disagrees with the core
    ],
)
def test_bad_partitions_raise_geometry_error(core, margin, stride):
    with pytest.raises(GeometryError):
        make_partition(core, margin, stride, ndim=3)


def test_core_not_multiple_of_stride_names_a_fix():
    with pytest.raises(GeometryError, match=r"\(16, 8, 8\)"):
        make_partition((12, 8, 8), 0, 8)


def test_empty_volume_and_bad_box_raise():
    partition = make_partition((4, 4, 4), 0, 4)
    with pytest.raises(GeometryError):
        list(iter_grid(partition, (0, 4, 4)))
    with pytest.raises(GeometryError):
        Box((0, 0), (-1, 2))
    with pytest.raises(GeometryError):
        Box((0, 0, 0), (1, 2))
