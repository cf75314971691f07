"""Tests of partseg.dataset: arange-exact reads, layouts, augmentation alignment, workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from partseg.channels import build_derive, sobel_contour
from partseg.dataset import AugmentConfig, InputLayout, MinicubeDataset, item_seed
from partseg.errors import ConfigError, GeometryError, StoreError
from partseg.geometry import Box, make_partition
from partseg.sampling import Sample, SamplerConfig, make_sampler

SHAPE = (6, 7, 9)  # (Z, Y, X)
PAD = 8  # more than any margin used below
NO_AUGMENT = AugmentConfig(enabled=False)
SPATIAL_ONLY = AugmentConfig(affine=1.0, gamma=0.0, noise=0.0, blur=0.0, bias_field=0.0)


def _volume(offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image (2, Z, Y, X): arange, channel 1 = arange + 1000; label (Z, Y, X): arange % 4."""
    base = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) + offset
    image = np.stack([base, base + 1000])
    label = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 4).astype(np.uint8)
    return image, label


class FakeCase:
    """An in-memory case following the Store/Case contract; counts its reads."""

    def __init__(self, image: np.ndarray, label: np.ndarray | None) -> None:
        self.image, self.label = image, label
        self.shape, self.n_channels = image.shape[1:], image.shape[0]
        self.has_label = label is not None
        self.reads = 0

    def read(self, box: Box, *, label: bool = True):
        self.reads += 1
        image = np.zeros((self.n_channels, *box.size), np.float32)
        out = np.zeros(box.size, np.uint8) if label and self.has_label else None
        inside, where = box.clip(self.shape)
        image[(slice(None), *where)] = self.image[(slice(None), *inside.slices())]
        if out is not None:
            out[where] = self.label[inside.slices()]
        return image, out


class FakeStore(dict):
    url = "fake://"


@pytest.fixture
def fake_store() -> FakeStore:
    return FakeStore(a=FakeCase(*_volume()), b=FakeCase(*_volume(500)))


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    """A real partseg store of the same two arange cases, through `ingest` of .npy files."""
    from partseg.store.ingest import IngestSettings, ingest

    root = tmp_path_factory.mktemp("store")
    for case_id, offset in (("a", 0), ("b", 500)):
        image, label = _volume(offset)
        np.save(root / f"{case_id}.npy", image)
        np.save(root / f"{case_id}_label.npy", label)
    settings = IngestSettings(crop="none", normalize="none", chunks=(2, 4, 4))
    ingest(root, root / "s.zarr", settings, progress=False)
    return str(root / "s.zarr")


LAYOUTS = {
    "3d": (InputLayout(3), make_partition((2, 4, 4), 1, stride=2)),
    "2d": (InputLayout(2, 0), make_partition((1, 4, 4), ((0, 0), (2, 2), (2, 2)), (1, 2, 2))),
    "2.5d": (InputLayout(2, 0), make_partition((1, 4, 4), ((2, 2), (2, 2), (2, 2)), (1, 2, 2))),
    "2.5d-x": (InputLayout(2, 2), make_partition((4, 4, 1), ((1, 1), (1, 1), (1, 1)), (2, 2, 1))),
}


def _centre_channel(layout: InputLayout, sample: Sample) -> int:
    """Network channel of the first image channel's core slice (2D: index c * slab + s)."""
    return 0 if layout.spatial_dims == 3 else sample.cube.margin_before[layout.slice_axis]


def _samples(store, partition, n_random: int = 12) -> list[Sample]:
    grid = make_sampler(SamplerConfig("grid"), store, partition, ["a", "b"]).epoch(0)
    config = SamplerConfig("uniform", samples_per_case=n_random // 2)
    return grid + make_sampler(config, store, partition, ["a", "b"], seed=4).epoch(0)


def _expected(sample: Sample, layout: InputLayout):
    """Image, target and mask of a sample, cut from zero-padded copies of the volumes."""
    image, label = _volume(0 if sample.case_id == "a" else 500)
    pad = ((0, 0),) + ((PAD, PAD),) * 3
    padded_image = np.pad(image, pad)
    padded_label = np.pad(label, PAD)
    valid = np.pad(np.ones(SHAPE, bool), PAD)
    box, core = sample.cube.input_box, sample.cube.core_box
    at = lambda b: tuple(slice(a + PAD, c + PAD) for a, c in zip(b.start, b.stop, strict=True))  # noqa: E731
    return (
        layout.image_to_network(padded_image[(slice(None), *at(box))]),
        layout.label_to_network(padded_label[at(core)]),
        layout.label_to_network(valid[at(core)]),
    )


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("backend", ["fake", "zarr"])
def test_items_are_the_arange_box_zero_padded(name, backend, fake_store, store_url):
    layout, partition = LAYOUTS[name]
    store = fake_store if backend == "fake" else store_url
    samples = _samples(fake_store, partition)
    if backend == "zarr":
        samples = samples[::3]  # zarr reads are slower: a third of the grid and random cubes
    dataset = MinicubeDataset(store, samples, layout, NO_AUGMENT)
    assert len(dataset) == len(samples)
    for i, sample in enumerate(samples):
        item = dataset[i]
        image, target, mask = _expected(sample, layout)
        assert item["image"].dtype == torch.float32 and item["target"].dtype == torch.int64
        assert item["mask"].dtype == torch.bool
        np.testing.assert_array_equal(item["image"].numpy(), image)
        np.testing.assert_array_equal(item["target"].numpy(), target)
        np.testing.assert_array_equal(item["mask"].numpy(), mask)
        assert item["case_id"] == sample.case_id and item["origin"] == sample.cube.origin
        assert tuple(item["image"].shape[1:]) == layout.spatial_size(partition)
        assert item["image"].shape[0] == layout.in_channels(2, partition)
        assert tuple(item["target"].shape) == layout.core_size(partition)


@pytest.mark.parametrize("name", ["3d", "2.5d"])
def test_derived_channel_is_the_sobel_of_the_box_before_augmentation(name, fake_store):
    layout, partition = LAYOUTS[name]
    samples = _samples(fake_store, partition, n_random=4)
    derive = build_derive(["sobel:1"])
    plain = MinicubeDataset(fake_store, samples, layout, NO_AUGMENT)
    derived = MinicubeDataset(fake_store, samples, layout, NO_AUGMENT, derive=derive)
    slab = partition.input_size[layout.slice_axis] if layout.spatial_dims == 2 else 1
    for i, sample in enumerate(samples):
        image = derived[i]["image"].numpy()  # (C' + slab, *spatial): sobel after (c, slab)
        assert image.shape[0] == layout.in_channels(3, partition)
        np.testing.assert_array_equal(image[: 2 * slab], plain[i]["image"].numpy())
        box = _expected(sample, InputLayout(3))[0]  # (2, *box) zero padded, read by the store
        contour = layout.image_to_network(sobel_contour(box[1])[None])
        np.testing.assert_allclose(image[2 * slab :], contour, rtol=1e-6)
        assert np.abs(contour).max() > 0  # an arange volume has a non-zero gradient


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_layout_2d_folds_the_slab_into_channels_in_c_slab_order(backend):
    layout = InputLayout(spatial_dims=2, slice_axis=1)
    box = np.arange(2 * 4 * 3 * 5).reshape(2, 4, 3, 5)  # (C, Z, slab along Y, X)
    image = torch.from_numpy(box) if backend == "torch" else box
    net = layout.image_to_network(image)
    assert tuple(net.shape) == (6, 4, 5)
    for c in range(2):
        for s in range(3):
            np.testing.assert_array_equal(np.asarray(net[c * 3 + s]), box[c, :, s, :])
    batch = np.stack([box, box + 1])  # leading batch axis
    assert layout.image_to_network(batch).shape == (2, 6, 4, 5)
    np.testing.assert_array_equal(layout.image_to_network(batch)[1], net + 1)
    core = np.arange(4 * 1 * 5).reshape(4, 1, 5)
    core = torch.from_numpy(core) if backend == "torch" else core
    flat = layout.label_to_network(core)
    assert tuple(flat.shape) == (4, 5)
    logits = np.stack([np.asarray(flat), -np.asarray(flat)])  # (K, Y', X')
    logits = torch.from_numpy(logits) if backend == "torch" else logits
    volume = layout.output_to_volume(logits)
    assert tuple(volume.shape) == (2, 4, 1, 5)
    np.testing.assert_array_equal(np.asarray(volume[0]), np.asarray(core))


def test_layout_3d_is_identity_and_sizes():
    layout, partition = LAYOUTS["3d"]
    x = np.arange(24).reshape(1, 2, 3, 4)
    assert layout.image_to_network(x) is x and layout.output_to_volume(x) is x
    assert layout.in_channels(4, partition) == 4
    assert layout.spatial_size(partition) == partition.input_size
    layout2, partition2 = LAYOUTS["2.5d"]
    assert layout2.in_channels(4, partition2) == 4 * 5
    assert layout2.spatial_size(partition2) == (8, 8)
    assert layout2.core_size(partition2) == (4, 4)


def test_layout_bad_input():
    with pytest.raises(ConfigError):
        InputLayout(spatial_dims=4)
    with pytest.raises(ConfigError):
        InputLayout(spatial_dims=2, slice_axis=3)
    with pytest.raises(GeometryError, match="core size 1"):
        InputLayout(2).in_channels(4, make_partition((2, 4, 4), 0, 2))
    with pytest.raises(GeometryError, match="one slice"):
        InputLayout(2).label_to_network(np.zeros((2, 4, 4)))


def test_reuse_reads_each_box_once_and_augments_each_item(fake_store):
    layout, partition = LAYOUTS["3d"]
    samples = _samples(fake_store, partition, n_random=4)[-8:]
    dataset = MinicubeDataset(fake_store, samples, layout, SPATIAL_ONLY, seed=1, reuse=3)
    assert len(dataset) == 3 * len(samples)
    items = [dataset[i] for i in range(len(dataset))]
    assert fake_store["a"].reads + fake_store["b"].reads == len(samples)
    for j in range(len(samples)):
        group = items[3 * j : 3 * j + 3]
        assert {it["origin"] for it in group} == {samples[j].cube.origin}
    differs = sum(
        not torch.equal(items[3 * j]["image"], items[3 * j + 1]["image"])
        for j in range(len(samples))
    )
    assert differs >= len(samples) // 2  # different augmentations of the same box


@pytest.mark.parametrize("name", ["3d", "2.5d"])
def test_flips_keep_image_label_and_mask_aligned_exactly(name):
    layout, partition = LAYOUTS[name]
    label = (1 + np.arange(np.prod(SHAPE)).reshape(SHAPE) % 5).astype(np.uint8)
    image = np.stack([label * 10.0, label * 10.0 + 1]).astype(np.float32)
    store = FakeStore(a=FakeCase(image, label))
    flips = AugmentConfig(affine=0.0, gamma=0.0, noise=0.0, blur=0.0, bias_field=0.0)
    sample = Sample("a", partition.at((4, 4, 8) if name == "3d" else (5, 4, 8)))  # at the edges
    plain = MinicubeDataset(store, [sample], layout, NO_AUGMENT)[0]
    assert not plain["mask"].all()  # the core reaches past the volume
    ndim = plain["target"].ndim
    subsets = [[a for a in range(ndim) if bits >> a & 1] for bits in range(2**ndim)]
    seen = set()
    for item in MinicubeDataset(store, [sample] * 16, layout, flips, seed=5):
        centre = item["image"][(_centre_channel(layout, sample), *layout.core_slices(sample.cube))]
        target, mask = item["target"], item["mask"]
        assert torch.equal((centre / 10).round().long(), target)
        axes = [a for a in subsets if torch.equal(plain["target"].flip(a), target)]
        assert len(axes) == 1  # the label is the un-augmented one, flipped along these axes
        assert torch.equal(mask, plain["mask"].flip(axes[0]))  # and so is the mask
        seen.add(tuple(axes[0]))
    assert len(seen) >= 3  # several flip combinations were drawn


@pytest.mark.filterwarnings("ignore:The maximum displacement")
@pytest.mark.parametrize("name", ["3d", "2.5d"])
@pytest.mark.parametrize("kind", ["affine", "elastic"])
def test_spatial_augmentation_moves_image_label_and_mask_together(name, kind):
    layout, _ = LAYOUTS[name]
    partition = {
        "3d": make_partition((8, 8, 8), 4, stride=2),
        "2.5d": make_partition((1, 12, 12), ((1, 1), (4, 4), (4, 4)), (1, 2, 2)),
    }[name]
    shape = (12, 16, 16)
    z, y, x = np.indices(shape)
    label = (1 + (z + 2 * y + 3 * x) % 5).astype(np.uint8)  # 1..5 inside, 0 = outside
    store = FakeStore(a=FakeCase((label * 10.0)[None].astype(np.float32), label))
    cube = partition.at((6, 8, 0) if layout.spatial_dims == 3 else (5, 4, 8))  # at the edges
    plain = MinicubeDataset(store, [Sample("a", cube)], layout, NO_AUGMENT)[0]
    no_intensity = dict(flip=False, gamma=0.0, noise=0.0, blur=0.0, bias_field=0.0)
    probability = {"affine": float(kind == "affine"), "elastic": float(kind == "elastic")}
    for interpolation in ("nearest", "linear"):
        config = AugmentConfig(**no_intensity, **probability, interpolation=interpolation)
        dataset = MinicubeDataset(store, [Sample("a", cube)] * 8, layout, config, seed=2)
        moved = 0
        for item in dataset:
            core = item["image"][
                (_centre_channel(layout, Sample("a", cube)), *layout.core_slices(cube))
            ]
            target, mask = item["target"], item["mask"]
            # the valid mask moves with the label: the label is >= 1 inside the volume, 0 outside
            assert (target[mask] >= 1).all() and (target[~mask] == 0).all()
            moved += not torch.equal(target, plain["target"])
            if interpolation == "nearest":  # one resampling of both: the values match exactly
                assert torch.equal((core / 10).round().long(), target)
        assert moved >= 6


def test_intensity_augmentation_changes_only_the_image(fake_store):
    layout, partition = LAYOUTS["3d"]
    samples = [Sample("a", partition.at((2, 0, 4)))] * 6
    config = AugmentConfig(flip=False, affine=0.0, gamma=1.0, noise=1.0, blur=1.0, bias_field=1.0)
    plain = MinicubeDataset(fake_store, samples[:1], layout, NO_AUGMENT)[0]
    for item in MinicubeDataset(fake_store, samples, layout, config):
        assert not torch.equal(item["image"], plain["image"])
        assert torch.equal(item["target"], plain["target"])
        assert torch.equal(item["mask"], plain["mask"])


def test_items_are_deterministic_per_seed_epoch_and_index(fake_store):
    layout, partition = LAYOUTS["3d"]
    samples = _samples(fake_store, partition, n_random=2)[:3]
    config = AugmentConfig(affine=1.0, noise=1.0)
    one = MinicubeDataset(fake_store, samples, layout, config, seed=9)
    two = MinicubeDataset(fake_store, samples, layout, config, seed=9)
    torch.manual_seed(123)  # the global RNG state does not matter ...
    first = one[1]
    torch.manual_seed(456)
    assert torch.equal(first["image"], two[1]["image"])
    assert torch.equal(first["target"], two[1]["target"])
    state = torch.get_rng_state()
    one[2]
    assert torch.equal(state, torch.get_rng_state())  # ... and is left untouched
    one.set_epoch(1)
    assert not torch.equal(one[1]["image"], first["image"])
    assert item_seed(9, 0, 1) != item_seed(9, 1, 1) != item_seed(9, 1, 2)


def test_dataloader_workers_return_the_same_batches(store_url, fake_store):
    layout, partition = LAYOUTS["2.5d"]
    samples = _samples(fake_store, partition, n_random=6)[-10:]
    dataset = MinicubeDataset(store_url, samples, layout, AugmentConfig(affine=0.5), seed=3)

    def batches(workers: int) -> list[dict]:
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 5
    for a, b in zip(serial, parallel, strict=True):
        for key in ("image", "target", "mask"):
            assert torch.equal(a[key], b[key])
        assert a["case_id"] == b["case_id"]


def test_dataset_pickles_without_store_handles(store_url, fake_store):
    layout, partition = LAYOUTS["3d"]
    samples = _samples(fake_store, partition, n_random=2)
    dataset = MinicubeDataset(store_url, samples, layout, AugmentConfig())
    before = len(pickle.dumps(dataset))
    item = dataset[0]
    assert dataset._store is not None and dataset._cache is not None
    data = pickle.dumps(dataset)
    assert len(data) <= before + 64  # no zarr handles, no cached box
    clone = pickle.loads(data)
    assert clone._store is None and clone.store_url == store_url
    assert torch.equal(clone[0]["target"], item["target"])


def test_bad_input_raises_clear_errors(fake_store):
    layout, partition = LAYOUTS["3d"]
    sample = Sample("a", partition.at((0, 0, 0)))
    with pytest.raises(ConfigError, match="reuse"):
        MinicubeDataset(fake_store, [sample], layout, reuse=0)
    with pytest.raises(ConfigError, match="affine"):
        AugmentConfig(affine=2.0)
    with pytest.raises(GeometryError, match="slice"):
        MinicubeDataset(fake_store, [sample], InputLayout(2), NO_AUGMENT)
    unlabeled = FakeStore(a=FakeCase(_volume()[0], None))
    with pytest.raises(StoreError, match="no label"):
        MinicubeDataset(unlabeled, [sample], layout)[0]
    with pytest.raises(IndexError):
        MinicubeDataset(fake_store, [sample], layout)[1]
    with pytest.raises(StoreError, match="not a partseg store"):
        MinicubeDataset("/nonexistent/store.zarr", [sample], layout)[0]
