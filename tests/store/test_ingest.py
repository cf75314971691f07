"""Ingest end to end: every layout, metadata round trip, crash and resume, bad cases."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from rawdata import (
    AFFINE,
    FOREGROUND,
    SHAPE,
    SPACING,
    make_image,
    make_label,
    save_nifti,
    write_brats,
    write_hdf5,
    write_msd,
    write_nnunet_regions,
    write_numpy,
)

from partseg.errors import InputError, StoreError
from partseg.geometry import Box
from partseg.store import open_store
from partseg.store.ingest import IngestReport, IngestSettings, ingest
from partseg.store.writer import StoreWriter

FG_BOX = Box(tuple(s.start for s in FOREGROUND), tuple(s.stop - s.start for s in FOREGROUND))


def _ingest(src: Path, store: Path | str, **kwargs: Any) -> IngestReport:
    settings = IngestSettings(**{"chunks": (4, 8, 8), **kwargs.pop("settings", {})})
    return ingest(src, store, settings, progress=False, **kwargs)


LAYOUTS = {
    "brats2020": (lambda p: write_brats(p, no_label=("B_002",)), (1, 2, 4), 4),
    "brats2023": (lambda p: write_brats(p, year=2023), (1, 2, 3), 4),
    "msd4d": (lambda p: write_msd(p), (1, 2), 2),
    "nnunet": (lambda p: write_msd(p, nnunet=True), (1, 2), 2),
    "nnunet_regions": (lambda p: write_nnunet_regions(p), (1, 2, 3), 4),
    "hdf5": (lambda p: write_hdf5(p), (1, 2), 2),
    "npy": (lambda p: write_numpy(p), (1, 2), 3),
    "npz": (lambda p: write_numpy(p, npz=True), (1, 2), 3),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_round_trips(tmp_path: Path, layout: str) -> None:
    writer, values, n_channels = LAYOUTS[layout]
    src = writer(tmp_path / "raw")
    report = _ingest(src, tmp_path / "s.zarr", settings={"normalize": "none", "dtype": "float32"})
    store = open_store(tmp_path / "s.zarr")
    assert len(store) == 2 and report.total == 2 and not report.bad
    assert len(store.channels) == n_channels
    assert store.label_mapping == {v: i for i, v in enumerate((0, *values))}
    for k, case in enumerate(store):
        assert case.crop_box == FG_BOX and case.shape == FG_BOX.size
        assert case.attrs["original_shape"] == list(SHAPE)
        image, label = case.read(Box.whole(case.shape))
        np.testing.assert_array_equal(
            image, make_image(n_channels, seed=k)[(slice(None), *FOREGROUND)]
        )
        if layout == "brats2020" and k == 1:
            assert not case.has_label and label is None  # a case without label
            assert case.class_locations(1).shape == (0, 3)
            continue
        want = make_label((1, 2, 4) if layout == "brats2020" else values, seed=k)[FOREGROUND]
        mapped = np.vectorize(store.label_mapping.get)(want)
        np.testing.assert_array_equal(label, mapped)
        for cls in range(len(store.classes)):
            assert case.voxel_counts[cls] == int((mapped == cls).sum())
            for z, y, x in case.class_locations(cls):
                assert label[z, y, x] == cls


def test_brats_metadata(tmp_path: Path, brats_dir: Path) -> None:
    _ingest(brats_dir, tmp_path / "s.zarr")
    store = open_store(tmp_path / "s.zarr")
    assert store.classes == ("background", "necrotic", "edema", "enhancing")
    assert store.label_mapping == {0: 0, 1: 1, 2: 2, 4: 3}
    assert store.attrs["format"] == "partseg-store" and store.attrs["format_version"] == 2
    assert store.attrs["chunks"] == [4, 8, 8] and store.attrs["dtype"] == "int16"
    case = store["B_001"]
    assert case.spacing == pytest.approx(SPACING)
    np.testing.assert_allclose(case.affine, AFFINE)
    assert case.attrs["label_mapping"] == [[0, 0], [1, 1], [2, 2], [4, 3]]
    assert case.attrs["channels"] == ["t1", "t1ce", "t2", "flair"]
    stats = case.attrs["normalization"]["stats"]
    image = case.read_image()
    raw = make_image(4)[(slice(None), *FOREGROUND)]
    for c in range(4):  # zscore over the foreground (all of the crop here)
        assert stats[c]["mean"] == np.rint(raw[c].mean())  # whole numbers: a whole mean
        z = (raw[c] - stats[c]["mean"]) / stats[c]["std"]
        np.testing.assert_allclose(image[c], z, rtol=1e-6, atol=1e-6)  # int16 keeps it exact


def test_crop_modes_and_resampling(tmp_path: Path) -> None:
    src = write_brats(tmp_path / "raw")
    # second case: foreground moved, so the dataset box is the union of both
    image = make_image(4, seed=1)
    image = np.roll(image, 1, axis=1)
    for c, name in enumerate(("t1", "t1ce", "t2", "flair")):
        save_nifti(src / "B_002" / f"B_002_{name}.nii.gz", image[c])
    _ingest(src, tmp_path / "d.zarr", settings={"crop": "dataset"})
    store = open_store(tmp_path / "d.zarr")
    union = Box((2, 3, 4), (9, 10, 13))
    assert store.attrs["dataset_crop_box"] == {"start": [2, 3, 4], "size": [9, 10, 13]}
    assert [c.crop_box for c in store] == [union, union]
    _ingest(src, tmp_path / "n.zarr", settings={"crop": "none"})
    assert open_store(tmp_path / "n.zarr")["B_001"].shape == SHAPE
    _ingest(src, tmp_path / "r.zarr", settings={"spacing": (1.0, 2.4, 1.5)})
    case = open_store(tmp_path / "r.zarr")["B_001"]
    assert case.shape == (16, 5, 13) and case.spacing == (1.0, 2.4, 1.5)
    assert case.attrs["original_spacing"] == pytest.approx(list(SPACING))
    assert set(np.unique(case.read_label())) <= {0, 1, 2, 3}


def test_fsspec_memory_url(brats_dir: Path) -> None:
    url = f"memory://partseg-ingest-{uuid.uuid4().hex}/s.zarr"
    _ingest(brats_dir, url, settings={"dtype": "float32"})
    store = open_store(url)
    assert store.case_ids == ("B_001", "B_002")
    image, _ = store["B_001"].read(Box((-1, 0, 0), (4, 4, 4)))
    assert image.dtype == np.float32 and not image[:, 0].any()


def test_crash_leaves_no_half_case_and_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_brats(tmp_path / "raw", ids=("B_001", "B_002", "B_003"))
    store_path = tmp_path / "s.zarr"
    original = StoreWriter.write_case
    calls = []

    def crash_on_second(self, case_id, image, label, attrs, *args, **kwargs):
        calls.append(case_id)
        if len(calls) == 2:  # write the image array into the tmp folder, then die
            group = zarr.open_group(self._zstore, path=f"cases/.tmp-{case_id}-1", mode="w")
            self._array(group, "image", image, (1, 4, 8, 8))
            raise RuntimeError("simulated crash")
        return original(self, case_id, image, label, attrs, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, "write_case", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _ingest(src, store_path)
    assert sorted(p.name for p in (store_path / "cases").iterdir()) == [
        ".tmp-B_002-1",
        "B_001",
        "zarr.json",
    ]
    assert open_store(store_path).case_ids == ("B_001",)  # only complete cases are visible
    monkeypatch.setattr(StoreWriter, "write_case", original)
    report = _ingest(src, store_path)
    assert report.already == ["B_001"] and report.written == ["B_002", "B_003"]
    assert report.removed_tmp == [".tmp-B_002-1"]
    assert open_store(store_path).case_ids == ("B_001", "B_002", "B_003")
    assert not list((store_path / "cases").glob(".tmp-*"))
    again = _ingest(src, store_path)
    assert again.written == [] and again.total == 3


def test_damaged_case_names_its_chunk_and_rerun_rewrites_it(
    tmp_path: Path, brats_dir: Path
) -> None:
    import shutil

    store_path = tmp_path / "s.zarr"
    _ingest(brats_dir, store_path)
    before = open_store(store_path)["B_002"].read_image()
    chunk = next(p for p in (store_path / "cases/B_002/image").rglob("*") if p.is_file()
                 and p.name != "zarr.json")  # fmt: skip
    chunk.write_bytes(chunk.read_bytes()[:20])  # a truncated chunk file
    with pytest.raises(StoreError, match=r"cases/B_002/image/c/.* is damaged.*partseg ingest"):
        open_store(store_path)["B_002"].read_image()
    shutil.rmtree(store_path / "cases/B_002")  # what the message says to do
    with pytest.raises(StoreError, match=r"'B_002' is listed .* its group is missing"):
        open_store(store_path)["B_002"]
    report = _ingest(brats_dir, store_path)
    assert report.missing == ["B_002"] and report.written == ["B_002"]
    assert report.already == ["B_001"] and "ingested again: B_002" in report.summary()
    assert open_store(store_path).case_ids == ("B_001", "B_002")
    np.testing.assert_array_equal(open_store(store_path)["B_002"].read_image(), before)


def test_resume_with_other_settings_is_refused(tmp_path: Path, brats_dir: Path) -> None:
    _ingest(brats_dir, tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="--overwrite"):
        _ingest(brats_dir, tmp_path / "s.zarr", settings={"dtype": "float32"})
    report = _ingest(brats_dir, tmp_path / "s.zarr", settings={"dtype": "float32"}, overwrite=True)
    assert report.written == ["B_001", "B_002"]
    assert open_store(tmp_path / "s.zarr").attrs["dtype"] == "float32"


def test_store_path_that_is_not_a_store(tmp_path: Path, brats_dir: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a partseg store"):
        _ingest(brats_dir, tmp_path / "x")
    (tmp_path / "empty").mkdir()
    assert _ingest(brats_dir, tmp_path / "empty").total == 2  # an empty folder is fine


def _bad_label(src: Path) -> Path:
    """B_002's label gets the value 3, not declared by BraTS 2020 naming."""
    return save_nifti(src / "B_002" / "B_002_seg.nii.gz", make_label((1, 2, 3)))


def test_first_bad_case_stops_without_half_written_case(tmp_path: Path) -> None:
    src = write_brats(tmp_path / "raw", ids=("B_001", "B_002", "B_003"))
    bad_file = _bad_label(src)
    with pytest.raises(InputError) as info:
        _ingest(src, tmp_path / "s.zarr")
    assert info.value.case == "B_002" and Path(info.value.path) == bad_file
    assert "[3]" in info.value.problem and "--labels" in info.value.hint
    assert open_store(tmp_path / "s.zarr").case_ids == ("B_001",)
    assert sorted(p.name for p in (tmp_path / "s.zarr" / "cases").iterdir()) == [
        "B_001",
        "zarr.json",
    ]


def test_skip_bad_reports_and_continues(tmp_path: Path) -> None:
    src = write_brats(tmp_path / "raw", ids=("B_001", "B_002", "B_003"))
    _bad_label(src)
    (src / "B_003" / "B_003_t1ce.nii.gz").unlink()
    report = _ingest(src, tmp_path / "s.zarr", skip_bad=True)
    assert report.written == ["B_001"]
    assert [(b["case"], Path(b["path"]).name) for b in report.bad] == [
        ("B_002", "B_002_seg.nii.gz"),
        ("B_003", "B_003_t1ce.nii.gz"),
    ]
    assert "B_002" in report.summary() and "missing image file" in report.summary()
    # declaring the value fixes B_002 (a new store, since labels differ)
    fixed = _ingest(src, tmp_path / "t.zarr", skip_bad=True, settings={"labels": (0, 1, 2, 3, 4)})
    assert fixed.written == ["B_001", "B_002"]


def test_undeclared_labels_come_from_the_first_case(tmp_path: Path) -> None:
    src = write_hdf5(tmp_path / "raw", ids=("h_0", "h_1"))
    import h5py

    with h5py.File(src / "h_1.h5", "r+") as f:
        f["label"][0, 0, 0] = 7
    report = _ingest(src, tmp_path / "s.zarr", skip_bad=True)
    assert report.written == ["h_0"]
    assert "[7]" in report.bad[0]["problem"] and report.bad[0]["case"] == "h_1"
    assert open_store(tmp_path / "s.zarr").classes == ("background", "label_1", "label_2")


def test_workers_process_pool(tmp_path: Path) -> None:
    src = write_brats(tmp_path / "raw", ids=("B_001", "B_002", "B_003"))
    _bad_label(src)
    report = ingest(
        src,
        tmp_path / "s.zarr",
        IngestSettings(chunks=(4, 8, 8)),
        workers=2,
        skip_bad=True,
        progress=False,
    )
    assert sorted(report.written) == ["B_001", "B_003"] and report.bad[0]["case"] == "B_002"
    store = open_store(tmp_path / "s.zarr")
    assert sorted(store.case_ids) == ["B_001", "B_003"]
    serial = _ingest(src, tmp_path / "t.zarr", skip_bad=True)
    assert serial.written == ["B_001", "B_003"]
    for case_id in store.case_ids:
        a, b = store[case_id], open_store(tmp_path / "t.zarr")[case_id]
        np.testing.assert_array_equal(a.read_image(), b.read_image())


@pytest.mark.parametrize("spacing", [None, (1.0, 2.4, 1.5)], ids=["native", "resampled"])
def test_int16_store_matches_float32_store(
    tmp_path: Path, brats_dir: Path, spacing: tuple[float, float, float] | None
) -> None:
    """Integer scans: int16 is exact; resampled (off the integer lattice): within half a step."""
    images = {}
    for dtype in ("int16", "float32"):
        _ingest(
            brats_dir, tmp_path / f"{dtype}.zarr", settings={"dtype": dtype, "spacing": spacing}
        )
        images[dtype] = open_store(tmp_path / f"{dtype}.zarr")["B_001"].read_image()
    scale = open_store(tmp_path / "int16.zarr")["B_001"]._array("image").attrs["scale"]
    error = np.abs(images["int16"] - images["float32"]).max(axis=(1, 2, 3))
    if spacing is None:
        np.testing.assert_allclose(images["int16"], images["float32"], rtol=1e-6, atol=1e-6)
    else:
        assert (error <= np.asarray(scale) / 2 + 1e-6).all() and error.max() > 0
