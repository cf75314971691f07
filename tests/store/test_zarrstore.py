"""The store reader: partial reads touch only their chunks, zero padding, URLs, errors."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import FsspecStore, WrapperStore

from partseg.errors import StoreError
from partseg.geometry import Box
from partseg.store import create_store, open_store

SHAPE = (12, 16, 20)  # (Z, Y, X)
CHUNKS = (4, 8, 8)  # chunk grid 3 x 2 x 3 per channel


class RecordingStore(WrapperStore):
    """A zarr store wrapper that records every key read."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.keys: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await self._store.get(key, prototype, byte_range)


def _write(
    url: str, dtype: str = "float32", *, channels_per_chunk: int = 1, step: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One case ``c`` with an arange image (2, 12, 16, 20) and label; returns both arrays.

    With ``step``: the image is ``arange * step`` with its first chunk all zero, and the case's
    normalisation record makes ``step`` the candidate int16 step (z-scores of std ``1 / step``).
    """
    image = np.arange(2 * np.prod(SHAPE), dtype=np.float32).reshape(2, *SHAPE)
    normalization: dict = {"method": "none"}
    if step is not None:
        image *= step
        image[:, : CHUNKS[0], : CHUNKS[1], : CHUNKS[2]] = 0
        normalization = {"method": "zscore", "stats": [{"mean": 0, "std": 1 / step}] * 2}
    label = (np.arange(np.prod(SHAPE)) % 4).reshape(SHAPE).astype(np.uint8)
    index = {
        "case_ids": [],
        "channels": ["a", "b"],
        "classes": ["bg", "x", "y", "z"],
        "label_mapping": [[0, 0], [1, 1], [2, 2], [4, 3]],
        "chunks": list(CHUNKS),
    }
    writer = create_store(url, index)
    locations = np.array([[1, 0, 0, 1], [1, 0, 0, 5], [3, 2, 3, 4]], np.int32)
    attrs = {
        "shape": list(SHAPE),
        "spacing": [2.0, 1.0, 1.5],
        "channels": ["a", "b"],
        "has_label": True,
        "voxel_counts": {"0": 960, "1": 960, "2": 960, "3": 960},
        "crop_box": {"start": [1, 2, 3], "size": list(SHAPE)},
        "affine": np.eye(4).tolist(),
        "normalization": normalization,
    }
    writer.write_case(
        "c", image, label, attrs, locations, CHUNKS, dtype=dtype,
        channels_per_chunk=channels_per_chunk,
    )  # fmt: skip
    writer.write_index({**writer.index(), "case_ids": ["c"]})
    return image, label


@pytest.fixture
def memory_url() -> str:
    return f"memory://partseg-test-{uuid.uuid4().hex}/store.zarr"


def _expected(image: np.ndarray, label: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Reference: pad the whole volume with zeros and slice (the zero pad rule)."""
    pad = 60
    big_image = np.pad(image, [(0, 0)] + [(pad, pad)] * 3)
    big_label = np.pad(label, [(pad, pad)] * 3)
    sl = tuple(slice(a + pad, b + pad) for a, b in zip(box.start, box.stop, strict=True))
    return big_image[(slice(None), *sl)], big_label[sl]


BOXES = [
    Box((1, 2, -3), (5, 7, 8)),  # reaches before X = 0
    Box((0, 0, 0), SHAPE),  # the whole volume
    Box((10, 14, 17), (6, 6, 6)),  # reaches past the end on every axis
    Box((-2, -2, -2), (16, 20, 24)),  # larger than the volume
    Box((4, 8, 8), (4, 8, 8)),  # exactly one chunk
    Box((50, 0, 0), (3, 3, 3)),  # misses the volume: all padding
]


@pytest.mark.parametrize("box", BOXES, ids=[str(b.start) for b in BOXES])
def test_read_equals_padded_slice_and_touches_only_its_chunks(memory_url: str, box: Box) -> None:
    image, label = _write(memory_url)
    recorder = RecordingStore(FsspecStore.from_url(memory_url, read_only=True))
    case = open_store(recorder)["c"]
    case.read(Box((0, 0, 0), (1, 1, 1)))  # open the arrays (metadata reads)
    recorder.keys.clear()
    got_image, got_label = case.read(box)
    want_image, want_label = _expected(image, label, box)
    assert got_image.dtype == np.float32 and got_image.shape == (2, *box.size)
    assert got_label is not None and got_label.dtype == np.uint8
    np.testing.assert_array_equal(got_image, want_image)
    np.testing.assert_array_equal(got_label, want_label)
    # chunk indices the clipped box overlaps, per axis
    ranges = []
    for a, b, n, c in zip(box.start, box.stop, SHAPE, CHUNKS, strict=True):
        lo, hi = max(a, 0), min(b, n)
        ranges.append(range(lo // c, (hi - 1) // c + 1) if hi > lo else range(0))
    grid = [(z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2]]
    expected = {f"cases/c/image/c/{ch}/{z}/{y}/{x}" for ch in range(2) for z, y, x in grid}
    expected |= {f"cases/c/label/c/{z}/{y}/{x}" for z, y, x in grid}
    assert set(recorder.keys) == expected
    assert len(recorder.keys) == len(expected)  # each chunk fetched once


@pytest.mark.parametrize("channels_per_chunk", [1, 2])
@pytest.mark.parametrize("reader", ["local", "fsspec", "zarr-indexing"])
def test_int16_reads_equal_padded_slice(
    tmp_path: Path,
    memory_url: str,
    monkeypatch: pytest.MonkeyPatch,
    reader: str,
    channels_per_chunk: int,
) -> None:
    """int16 counts x scale give back the exact values through every read path, box after box."""
    from partseg.store.chunks import ChunkReader

    url = str(tmp_path / "s.zarr") if reader == "local" else memory_url
    image, label = _write(url, "int16", channels_per_chunk=channels_per_chunk, step=0.25)
    if reader == "zarr-indexing":
        monkeypatch.setattr(ChunkReader, "_supported", staticmethod(lambda array: False))
    case = open_store(url)["c"]
    stored = case._array("image")
    assert stored.dtype == np.int16 and stored.attrs["scale"] == [0.25, 0.25]
    assert stored.chunks == (channels_per_chunk, *CHUNKS)
    if reader == "local":  # every chunk is written, the all-zero first one too
        assert (tmp_path / "s.zarr/cases/c/image/c/0/0/0/0").exists()
    for box in BOXES:  # one open case: buffers reused between reads leak nothing
        got_image, got_label = case.read(box)
        want_image, want_label = _expected(image, label, box)
        assert got_image.dtype == np.float32
        np.testing.assert_array_equal(got_image, want_image)
        np.testing.assert_array_equal(got_label, want_label)


def test_read_without_label_fetches_no_label_chunk(memory_url: str) -> None:
    _write(memory_url)
    recorder = RecordingStore(FsspecStore.from_url(memory_url, read_only=True))
    case = open_store(recorder)["c"]
    image, label = case.read(Box((0, 0, 0), (4, 8, 8)), label=False)
    assert label is None and image.shape == (2, 4, 8, 8)
    assert not any("/label/" in k for k in recorder.keys)
    assert sum("/image/c/" in k for k in recorder.keys) == 2


def test_local_path_metadata_and_pickle(tmp_path: Path) -> None:
    image, _ = _write(str(tmp_path / "s.zarr"), dtype="float16")
    store = open_store(tmp_path / "s.zarr")
    assert store.case_ids == ("c",) and len(store) == 1 and "c" in store
    assert store.channels == ("a", "b") and store.classes == ("bg", "x", "y", "z")
    assert store.label_mapping == {0: 0, 1: 1, 2: 2, 4: 3}
    assert store.chunks == CHUNKS
    case = next(iter(store))
    assert case.shape == SHAPE and case.n_channels == 2 and case.has_label
    assert case.spacing == (2.0, 1.0, 1.5) and case.voxel_counts[3] == 960
    assert case.crop_box == Box((1, 2, 3), SHAPE)
    np.testing.assert_array_equal(case.affine, np.eye(4))
    got, _ = case.read(Box((0, 0, 0), (2, 2, 2)))
    assert got.dtype == np.float32  # float16 on disk, float32 out
    np.testing.assert_array_equal(got, image[:, :2, :2, :2].astype(np.float16).astype(np.float32))
    clone = pickle.loads(pickle.dumps(store))["c"]
    np.testing.assert_array_equal(clone.read(Box((0, 0, 0), (2, 2, 2)))[0], got)
    np.testing.assert_array_equal(case.class_locations(1), [[0, 0, 1], [0, 0, 5]])
    assert case.class_locations(1).dtype == np.int64
    assert case.class_locations(2).shape == (0, 3)
    assert store.size_on_disk() > 0


def test_file_url(tmp_path: Path) -> None:
    _write(str(tmp_path / "s.zarr"))
    assert open_store(f"file://{tmp_path}/s.zarr").case_ids == ("c",)


def test_not_a_store(tmp_path: Path, memory_url: str) -> None:
    with pytest.raises(StoreError, match="partseg ingest"):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a partseg store"):
        open_store(tmp_path / "plain")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["x"] = 1
    with pytest.raises(StoreError, match="zarr group but not a partseg store"):
        open_store(tmp_path / "other.zarr")
    _write(memory_url)
    with pytest.raises(StoreError, match="'nope' is not in the store"):
        open_store(memory_url)["nope"]


def test_create_store_refuses_foreign_folders(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("precious")
    with pytest.raises(StoreError, match="not a partseg store"):
        create_store(tmp_path / "data", {}, overwrite=True)
    assert (tmp_path / "data" / "keep.txt").exists()


@pytest.mark.parametrize("shape", [(3, 7, 100, 100), (2, 3, 200, 200), (2, 3)])
def test_float16_conversion_into_strided_windows(shape: tuple[int, ...]) -> None:
    """The slab-wise torch copy used for float16 stores writes through views, any threads."""
    import torch

    from partseg.store.chunks import convert_into

    source = (np.arange(np.prod(shape)) % 2039).reshape(shape).astype(np.float16)
    big = np.zeros((shape[0] + 1, *(s + 2 for s in shape[1:])), np.float32)
    window = big[(slice(1, None), *(slice(1, 1 + s) for s in shape[1:]))]  # strided view
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        convert_into(source, window)
    finally:
        torch.set_num_threads(previous)
    np.testing.assert_array_equal(window, source.astype(np.float32))
    window[...] = 0
    assert not big.any()  # nothing written outside the window


def test_open_cases_are_bounded_and_reopen_identically(
    memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from partseg.store import zarrstore

    image, _ = _write(memory_url)
    store = open_store(memory_url)
    store.case_ids = ("c", "c2", "c3")  # the same group under three names is enough here
    monkeypatch.setattr(zarrstore, "CASE_CACHE", 2)
    group = zarr.open_group(store._zstore, mode="r")["cases/c"]
    monkeypatch.setattr(store, "_root", {f"cases/{i}": group for i in store.case_ids})
    for case_id in ("c", "c2", "c3", "c"):
        case = store[case_id]
        assert np.array_equal(case.read(Box((0, 0, 0), SHAPE))[0], image)
        assert case.class_locations(1).tolist() == [[0, 0, 1], [0, 0, 5]]
        assert len(store._cases) <= 2
    assert list(store._cases) == ["c3", "c"]  # least recently used dropped first
