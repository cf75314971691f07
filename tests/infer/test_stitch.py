"""Stitcher: cores tile the output, chunks are written once, blends normalise their weights."""

from __future__ import annotations

import numpy as np
import pytest

from partseg.errors import GeometryError
from partseg.geometry import make_partition
from partseg.infer.stitch import (
    MemoryBackend,
    Stitcher,
    ZarrBackend,
    blend_weights,
    grid_shard,
    softmax,
)

SHAPES = {2: (1, 11, 7), 3: (9, 11, 7)}  # not multiples of the core


def _field(shape, channels=2):
    """(K, Z, Y, X) arange-valued field: a wrong offset shows up as a wrong number."""
    n = int(np.prod(shape))
    return np.stack(
        [np.arange(n, dtype=np.float32).reshape(shape) + 1000 * k for k in range(channels)]
    )


def _partition(ndim_model):
    if ndim_model == 2:  # 2D: core one slice thick, stride 1 on the slice axis
        return make_partition((1, 4, 4), [(1, 1), (3, 3), (3, 3)], (1, 2, 2))
    return make_partition((4, 4, 4), 3, stride=2)


def _region_values(field, stitcher, cube):
    """The field over the stitcher's region of ``cube``, zero outside the volume."""
    region = stitcher.region(cube)
    out = np.zeros((field.shape[0], *region.size), np.float32)
    inside, where = region.clip(field.shape[1:])
    out[(slice(None), *where)] = field[(slice(None), *inside.slices())]
    return out


class RecordingBackend(MemoryBackend):
    def __init__(self, shape, dtype):
        super().__init__(shape, dtype)
        self.writes: list[tuple[slice, ...]] = []

    def write(self, index, array):
        self.writes.append(index)
        super().write(index, array)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("blend", ["crop", "average", "gaussian", "hann"])
def test_stitched_field_is_reconstructed_exactly(dims, blend):
    shape, partition = SHAPES[dims], _partition(dims)
    field = _field(shape)
    backend = RecordingBackend((2, *shape), np.float32)
    stitcher = Stitcher(
        shape, partition, 2, blend=blend, activation="none", dtype=np.float32, backend=backend
    )
    for cube in partition.grid(shape):
        stitcher.aggregate(_region_values(field, stitcher, cube), cube)
    result = stitcher.finalize()
    np.testing.assert_allclose(result, field, rtol=1e-6, atol=1e-3)
    # every chunk written exactly once, and every write is one core-aligned chunk
    starts = [tuple(s.start for s in index[1:]) for index in backend.writes]
    assert len(starts) == len(set(starts)) == int(np.prod(partition.grid_shape(shape)))
    for start in starts:
        assert all(a % c == 0 for a, c in zip(start, partition.core, strict=True))


def test_blend_overlap_defaults_to_margin_and_slice_axis_never_overlaps():
    stitcher = Stitcher(SHAPES[2], _partition(2), 2, blend="gaussian")
    assert stitcher.overlap == (0, 3, 3)
    assert Stitcher(SHAPES[3], _partition(3), 2, blend="crop").overlap == (0, 0, 0)
    with pytest.raises(GeometryError, match="overlap"):
        Stitcher(SHAPES[3], _partition(3), 2, blend="hann", overlap=4)
    no_margin = make_partition((4, 4, 4), 0, stride=2)
    with pytest.raises(GeometryError, match="equals crop"):  # the margin left no overlap
        Stitcher(SHAPES[3], no_margin, 2, blend="gaussian")


def test_blend_weights_weight_centre_more_than_edges():
    for blend in ("gaussian", "hann"):
        w = blend_weights((5, 7), blend)
        assert w.shape == (5, 7) and (w > 0).all()
        assert w[2, 3] == w.max() and w[0, 0] == w.min()
    assert (blend_weights((3, 3), "average") == 1).all()


def test_labels_output_is_argmax_of_softmax():
    shape, partition = SHAPES[3], _partition(3)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, *shape)).astype(np.float32)
    stitcher = Stitcher(shape, partition, 3, output="labels")
    for cube in partition.grid(shape):
        stitcher.aggregate(_region_values(logits, stitcher, cube), cube)
    labels = stitcher.finalize()
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, logits.argmax(0))
    np.testing.assert_allclose(softmax(logits).sum(0), 1, rtol=1e-6)


def test_pending_chunks_stay_within_three_slabs():
    shape, partition = (40, 12, 12), make_partition((4, 4, 4), 2, stride=2)
    stitcher = Stitcher(shape, partition, 1, blend="gaussian", activation="none", dtype=np.float32)
    field = _field(shape, 1)
    peak = 0
    for cube in partition.grid(shape):
        stitcher.aggregate(_region_values(field, stitcher, cube), cube)
        peak = max(peak, len(stitcher._pending))
    slab = 3 * 3
    assert peak <= 3 * slab  # previous, current and next slab: not the 90 chunks of the volume
    np.testing.assert_allclose(stitcher.finalize(), field, atol=1e-2)


def test_zarr_backend_chunks_are_cores_and_parallel_shards_complete_it(tmp_path):
    shape, partition = SHAPES[3], _partition(3)
    field = _field(shape)
    path = tmp_path / "probabilities.zarr"
    ZarrBackend.create(path, (2, *shape), (2, *partition.core), np.float32)
    cubes = partition.grid(shape)
    for rank in range(2):  # two writers, each with its own handle on the array
        stitcher = Stitcher(
            shape, partition, 2, activation="none", dtype=np.float32, backend=ZarrBackend.open(path)
        )
        for cube in grid_shard(cubes, rank, 2):
            stitcher.aggregate(_region_values(field, stitcher, cube), cube)
        stitcher.finalize(complete=False)
    array = ZarrBackend.open(path).result()
    assert array.chunks == (2, *partition.core)
    np.testing.assert_array_equal(array[...], field)


def test_zarr_stitcher_output_matches_memory_in_float16(tmp_path):
    shape, partition = SHAPES[3], _partition(3)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, *shape)).astype(np.float32)
    outputs = []
    for backend in (
        None,
        ZarrBackend.create(tmp_path / "p.zarr", (2, *shape), (2, *partition.core), np.float16),
    ):
        stitcher = Stitcher(shape, partition, 2, blend="hann", backend=backend)
        for cube in partition.grid(shape):
            stitcher.aggregate(_region_values(logits, stitcher, cube), cube)
        outputs.append(np.asarray(stitcher.finalize()[...]))
    assert outputs[0].dtype == np.float16
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_allclose(outputs[0].astype(np.float32), softmax(logits), atol=1e-3)


def test_errors_for_twice_predicted_missing_and_misshapen_values():
    shape, partition = SHAPES[3], _partition(3)
    cubes = partition.grid(shape)
    stitcher = Stitcher(shape, partition, 2)
    values = np.zeros((2, *partition.core), np.float32)
    stitcher.aggregate(values, cubes[0])
    with pytest.raises(GeometryError, match="predicted twice"):
        stitcher.aggregate(values, cubes[0])
    with pytest.raises(GeometryError, match="expects values of shape"):
        stitcher.aggregate(values[:1], cubes[1])
    with pytest.raises(GeometryError, match="were not predicted"):
        stitcher.finalize()
    with pytest.raises(GeometryError, match="rank"):
        grid_shard(cubes, 2, 2)
    with pytest.raises(GeometryError, match="blend='median'"):
        Stitcher(shape, partition, 2, blend="median")
