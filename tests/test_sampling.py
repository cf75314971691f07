"""Tests of partseg.sampling: grid, uniform and foreground samplers, sharding, bad input."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from partseg.errors import ConfigError, GeometryError, StoreError
from partseg.geometry import Box, make_partition
from partseg.sampling import (
    Sample,
    SamplerConfig,
    centred_origin,
    make_sampler,
    shard,
    uniform_origin,
)


class FakeCase:
    """A case held in memory, following the Store/Case contract."""

    def __init__(self, case_id: str, image: np.ndarray, label: np.ndarray | None) -> None:
        self.id, self.image, self.label = case_id, image, label
        self.shape = label.shape if label is not None else image.shape[1:]
        self.n_channels = image.shape[0]
        self.has_label = label is not None
        values, counts = np.unique(label, return_counts=True) if self.has_label else ((), ())
        self.voxel_counts = {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    def read(self, box: Box, *, label: bool = True):
        image = np.zeros((self.n_channels, *box.size), np.float32)
        out = np.zeros(box.size, np.uint8) if label and self.has_label else None
        inside, where = box.clip(self.shape)
        image[(slice(None), *where)] = self.image[(slice(None), *inside.slices())]
        if out is not None:
            out[where] = self.label[inside.slices()]
        return image, out

    def class_locations(self, cls: int) -> np.ndarray:
        if not self.has_label:
            return np.zeros((0, 3), np.int64)
        return np.argwhere(self.label == cls).astype(np.int64)


class FakeStore:
    url = "fake://"

    def __init__(self, cases: list[FakeCase]) -> None:
        self.cases = {c.id: c for c in cases}
        self.case_ids = tuple(self.cases)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self.cases

    def __getitem__(self, case_id: str) -> FakeCase:
        return self.cases[case_id]


def _case(case_id: str, shape, labels: dict[tuple[int, ...], int] | None = None) -> FakeCase:
    label = np.zeros(shape, np.uint8)
    for voxel, cls in (labels or {}).items():
        label[voxel] = cls
    return FakeCase(case_id, np.zeros((1, *shape), np.float32), label)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore([_case("a", (10, 12, 14)), _case("b", (7, 16, 9)), _case("c", (3, 5, 6))])


PARTITIONS = {
    "3d": make_partition((4, 4, 4), 2, stride=2),
    "2d": make_partition((1, 4, 4), ((0, 0), (2, 2), (2, 2)), stride=(1, 2, 2)),
    "2.5d": make_partition((1, 4, 4), ((1, 1), (2, 2), (2, 2)), stride=(1, 2, 2)),
}


def _overlaps(sample: Sample, shape) -> bool:
    return all(
        o < n and o + c > 0
        for o, c, n in zip(sample.cube.origin, sample.cube.core, shape, strict=True)
    )


@pytest.mark.parametrize("name", list(PARTITIONS))
def test_grid_sampler_lists_every_grid_cube_in_case_order(store, name):
    partition = PARTITIONS[name]
    sampler = make_sampler(SamplerConfig("grid"), store, partition, ["a", "b", "c"])
    samples = sampler.epoch(0)
    expected = [Sample(cid, cube) for cid in "abc" for cube in partition.grid(store[cid].shape)]
    assert samples == expected
    assert sampler.epoch(5) == samples
    for cid in "abc":
        count = np.zeros(store[cid].shape, np.int32)
        for s in samples:
            if s.case_id == cid:
                count[s.cube.core_inside(store[cid].shape)[0].slices()] += 1
        assert (count == 1).all()


@pytest.mark.parametrize("name", list(PARTITIONS))
def test_uniform_origins_are_aligned_overlapping_and_spread(store, name):
    partition = PARTITIONS[name]
    config = SamplerConfig("uniform", samples_per_case=1500)
    samples = make_sampler(config, store, partition, ["a", "b"], seed=3).epoch(0)
    assert len(samples) == 3000
    for s in samples:
        shape = store[s.case_id].shape
        assert _overlaps(s, shape)
        assert all(o % st == 0 for o, st in zip(s.cube.origin, partition.stride, strict=True))
        assert s.cube.core == partition.core
        assert s.cube.margin_before == partition.margin_before
    # every voxel of case a's volume is reachable: some sampled core covers it
    covered = np.zeros(store["a"].shape, bool)
    for s in samples:
        if s.case_id == "a":
            covered[s.cube.core_inside(store["a"].shape)[0].slices()] = True
    assert covered.all()


def test_uniform_origin_worked_examples():
    rng = np.random.default_rng(0)
    partition = make_partition((4, 8, 4), 0, stride=(2, 4, 4))
    draws = np.array([uniform_origin((10, 3, 4), partition, rng) for _ in range(500)])
    assert set(draws[:, 0]) == {0, 2, 4, 6}  # n=10, core 4, stride 2
    assert set(draws[:, 1]) == {-4, 0}  # n=3, core 8 > n: the volume stays inside the core
    assert set(draws[:, 2]) == {0}  # n = core


def test_core_and_margin_larger_than_volume_still_overlap(store):
    partition = make_partition((8, 8, 8), 6, stride=4)
    config = SamplerConfig("foreground", samples_per_case=50, foreground_share=0.5)
    tiny = FakeStore([_case("t", (3, 5, 2), {(1, 2, 1): 1})])
    for s in make_sampler(config, tiny, partition, ["t"]).epoch(0):
        assert _overlaps(s, (3, 5, 2))
        # the whole volume lies inside the core: cores of 8 > every axis
        inside, _ = s.cube.core_inside((3, 5, 2))
        assert inside.size == (3, 5, 2)


@pytest.mark.parametrize("kind", ["uniform", "foreground"])
def test_epochs_are_deterministic_in_seed_and_epoch(kind):
    store = FakeStore([_case("a", (10, 12, 14), {(5, 6, 7): 1}), _case("b", (9, 9, 9))])
    config = SamplerConfig(kind, samples_per_case=20)
    partition = PARTITIONS["3d"]
    one = make_sampler(config, store, partition, ["a", "b"], seed=7)
    two = make_sampler(config, store, partition, ["a", "b"], seed=7)
    assert one.epoch(3) == two.epoch(3)
    assert one.epoch(3) != one.epoch(4)
    other = make_sampler(config, store, partition, ["a", "b"], seed=8)
    assert other.epoch(3) != one.epoch(3)
    assert collections.Counter(s.case_id for s in one.epoch(0)) == {"a": 20, "b": 20}


@pytest.mark.parametrize("n", [1, 5, 8, 13])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_are_disjoint_complete_and_equal(n, world_size):
    items = list(range(n))
    shards = [shard(items, r, world_size) for r in range(world_size)]
    padded = -(-n // world_size) * world_size
    assert {len(s) for s in shards} == {padded // world_size}
    # the shards hold disjoint positions of the padded epoch (rank r: r, r + w, ...), and the
    # padding repeats the first samples
    epoch = items + [items[i % n] for i in range(padded - n)]
    for r, part in enumerate(shards):
        assert part == [epoch[p] for p in range(r, padded, world_size)]
    flat = [x for part in shards for x in part]
    assert collections.Counter(flat) == collections.Counter(epoch)
    assert set(flat) == set(items)


def test_sampler_shards_union_to_the_epoch(store):
    config = SamplerConfig("uniform", samples_per_case=5)
    sampler = make_sampler(config, store, PARTITIONS["3d"], ["a", "b", "c"], seed=1)
    full = sampler.epoch(2)
    shards = [sampler.epoch(2, rank=r, world_size=4) for r in range(4)]
    assert all(len(s) == 4 for s in shards)  # 15 samples padded to 16
    merged = [shards[i % 4][i // 4] for i in range(16)]
    assert merged[:15] == full and merged[15] == full[0]


@pytest.mark.parametrize("name", ["3d", "2.5d"])
def test_foreground_sampler_hits_the_rare_class_at_the_requested_share(name):
    partition = PARTITIONS[name]
    shape = (16, 32, 32)
    label = np.zeros(shape, np.uint8)
    label[2:14, 4:28, 4:28] = 1  # a big class
    label[6:10, 10:20, 10:20] = 2  # a middle one
    label[12, 25, 3] = 3  # one voxel: the rarest class
    store = FakeStore([FakeCase("a", np.zeros((1, *shape), np.float32), label)])
    config = SamplerConfig("foreground", samples_per_case=1500, foreground_share=0.6)
    samples = make_sampler(config, store, partition, ["a"], seed=0).epoch(0)
    share_rare = sum(_holds(s, (12, 25, 3)) for s in samples) / len(samples)
    # class-balanced: a third of the 60 % foreground draws hold the single voxel, and uniform
    # draws almost never do
    assert 0.17 < share_rare < 0.24, share_rare
    share_foreground = sum(bool(label[_core_slices(s, shape)].any()) for s in samples)
    assert share_foreground / len(samples) >= 0.6
    unbalanced = SamplerConfig("foreground", 1500, 0.6, class_balanced=False)
    samples = make_sampler(unbalanced, store, partition, ["a"], seed=0).epoch(0)
    rare = sum(_holds(s, (12, 25, 3)) for s in samples)
    assert rare / len(samples) < 0.02  # by voxel count the rare class is (almost) never picked


def _holds(sample: Sample, voxel: tuple[int, ...]) -> bool:
    cube = sample.cube
    return all(o <= v < o + c for o, c, v in zip(cube.origin, cube.core, voxel, strict=True))


def _core_slices(sample: Sample, shape) -> tuple[slice, ...]:
    return sample.cube.core_inside(shape)[0].slices()


def test_case_without_foreground_falls_back_to_uniform():
    store = FakeStore([_case("empty", (6, 8, 8)), _case("fg", (6, 8, 8), {(3, 4, 4): 2})])
    config = SamplerConfig("foreground", samples_per_case=100, foreground_share=1.0)
    samples = make_sampler(config, store, PARTITIONS["3d"], ["empty", "fg"]).epoch(0)
    empty = [s for s in samples if s.case_id == "empty"]
    fg = [s for s in samples if s.case_id == "fg"]
    assert len(empty) == len(fg) == 100
    assert all(_overlaps(s, (6, 8, 8)) for s in empty)
    assert len({s.cube.origin for s in empty}) > 3  # spread: uniform draws
    assert all(_holds(s, (3, 4, 4)) for s in fg)


def test_class_counted_but_without_locations_falls_back_to_uniform():
    case = _case("a", (6, 8, 8), {(3, 4, 4): 3})
    case.class_locations = lambda cls: np.zeros((0, 3), np.int64)  # e.g. an old store
    config = SamplerConfig("foreground", samples_per_case=50, foreground_share=1.0)
    samples = make_sampler(config, FakeStore([case]), PARTITIONS["3d"], ["a"]).epoch(0)
    assert len(samples) == 50 and all(_overlaps(s, (6, 8, 8)) for s in samples)
    assert len({s.cube.origin for s in samples}) > 3


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_centred_origin_holds_the_voxel_near_the_centre(jitter):
    rng = np.random.default_rng(1)
    partition = make_partition((1, 8, 16), 0, stride=(1, 4, 4))
    for voxel in [(0, 0, 0), (5, 13, 27), (2, 7, 3)]:
        for _ in range(50):
            origin = centred_origin(voxel, partition, jitter, rng)
            offsets = [v - o for v, o in zip(voxel, origin, strict=True)]
            assert all(0 <= d < c for d, c in zip(offsets, partition.core, strict=True))
            assert all(o % s == 0 for o, s in zip(origin, partition.stride, strict=True))
            for d, c, s in zip(offsets, partition.core, partition.stride, strict=True):
                assert abs(d - (c - 1) / 2) <= max(jitter * c / 2, s / 2)


def test_sampler_over_a_real_store(tmp_path):
    from partseg.store.ingest import IngestSettings, ingest
    from partseg.store.zarrstore import open_store

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(8, 10, 12), (6, 9, 7)]):
        label = np.zeros(shape, np.uint8)
        label[1:4, 2:5, 3:6] = 1
        label[5, 6, 2 + i] = 2
        np.save(src / f"c{i}.npy", rng.normal(size=(2, *shape)).astype(np.float32) + 1)
        np.save(src / f"c{i}_label.npy", label)
    settings = IngestSettings(crop="none", normalize="none", chunks=(4, 4, 4))
    ingest(src, tmp_path / "s.zarr", settings, progress=False)
    store = open_store(tmp_path / "s.zarr")
    partition = PARTITIONS["3d"]
    config = SamplerConfig("foreground", samples_per_case=40, foreground_share=1.0)
    samples = make_sampler(config, store, partition, store.case_ids).epoch(0)
    labels = [store[s.case_id].read(s.cube.core_box)[1] for s in samples]
    assert all((label > 0).any() for label in labels)  # every core holds foreground
    rare = sum(bool((label == 2).any()) for label in labels)
    assert 0.3 < rare / len(samples) < 0.75  # class 2 (one voxel) is drawn half the time
    grid = make_sampler(SamplerConfig("grid"), store, partition, store.case_ids).epoch(0)
    assert len(grid) == 2 * 3 * 3 + 2 * 3 * 2


def test_bad_config_and_input_raise_clear_errors(store):
    with pytest.raises(ConfigError, match="kind"):
        SamplerConfig("random")
    with pytest.raises(ConfigError, match="foreground_share"):
        SamplerConfig(foreground_share=1.5)
    with pytest.raises(ConfigError, match="samples_per_case"):
        SamplerConfig(samples_per_case=0)
    with pytest.raises(ConfigError, match="jitter"):
        SamplerConfig(jitter=-0.1)
    with pytest.raises(StoreError, match="zz"):
        make_sampler(SamplerConfig(), store, PARTITIONS["3d"], ["a", "zz"])
    with pytest.raises(StoreError, match="no cases"):
        make_sampler(SamplerConfig(), store, PARTITIONS["3d"], [])
    with pytest.raises(GeometryError, match="3D"):
        make_sampler(SamplerConfig(), store, make_partition((4, 4), 0, 2), ["a"])
    with pytest.raises(ConfigError, match="rank"):
        shard([1, 2], rank=2, world_size=2)
    with pytest.raises(ConfigError, match="world_size"):
        shard([1, 2], rank=0, world_size=0)
