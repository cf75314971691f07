"""Source discovery per layout and the checks of read_case."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from rawdata import (
    AFFINE,
    SPACING,
    make_image,
    make_label,
    save_nifti,
    write_brats,
    write_folders,
    write_hdf5,
    write_msd,
    write_numpy,
)

from partseg.errors import InputError
from partseg.store.reading import read_case
from partseg.store.sources import discover


@pytest.mark.parametrize("flat", [False, True])
def test_brats2020_nested_and_flat(tmp_path: Path, flat: bool) -> None:
    root = write_brats(tmp_path / "b", flat=flat, no_label=("B_002",))
    source = discover(root)
    assert source.layout == "brats"
    assert [c.case_id for c in source.cases] == ["B_001", "B_002"]
    assert source.channels == ("t1", "t1ce", "t2", "flair")
    assert source.labels == {0: "background", 1: "necrotic", 2: "edema", 4: "enhancing"}
    first, second = source.cases
    assert [p.name for p in first.image_files] == [
        "B_001_t1.nii.gz", "B_001_t1ce.nii.gz", "B_001_t2.nii.gz", "B_001_flair.nii.gz"
    ]  # fmt: skip
    assert first.label_file is not None and first.label_file.name == "B_001_seg.nii.gz"
    assert second.label_file is None


def test_brats2023_naming(tmp_path: Path) -> None:
    source = discover(write_brats(tmp_path / "b", year=2023), layout="brats")
    assert source.channels == ("t1n", "t1c", "t2w", "t2f")
    assert sorted(source.labels or {}) == [0, 1, 2, 3]
    assert source.cases[0].label_file.name == "B_001-seg.nii.gz"


@pytest.mark.parametrize("nnunet", [False, True])
def test_msd_and_nnunet(tmp_path: Path, nnunet: bool) -> None:
    root = write_msd(tmp_path / "m", nnunet=nnunet, test_ids=("prostate_09",))
    source = discover(root)
    assert source.layout == "msd"
    assert source.channels == ("T2", "ADC")
    assert source.labels == {0: "background", 1: "PZ", 2: "TZ"}
    assert [c.case_id for c in source.cases] == ["prostate_00", "prostate_01"]
    assert len(source.cases[0].image_files) == (2 if nnunet else 1)
    test = discover(root, split="test").cases
    assert [(c.case_id, c.label_file) for c in test] == [("prostate_09", None)]
    assert len(discover(root, split="all").cases) == 3


def test_hdf5_and_numpy(tmp_path: Path) -> None:
    h5 = discover(write_hdf5(tmp_path / "h"))
    assert (h5.layout, h5.channels, h5.labels) == ("hdf5", ("ch0", "ch1"), None)
    npy = discover(write_numpy(tmp_path / "n", label_suffix="seg"))
    assert npy.layout == "numpy" and [c.case_id for c in npy.cases] == ["n_0", "n_1"]
    assert npy.cases[0].label_file.name == "n_0_seg.npy"
    assert npy.channels == ("ch0", "ch1", "ch2")
    npz = discover(write_numpy(tmp_path / "z", npz=True))
    assert [c.fmt for c in npz.cases] == ["npz", "npz"]


def test_case_folders_with_any_channel_names_ingest(tmp_path: Path) -> None:
    from partseg.cli import main
    from partseg.store import open_store

    root = write_folders(tmp_path / "tof")  # the aneurysm phantom layout: <id>/<id>_tof.nii.gz
    source = discover(root)
    assert (source.layout, source.channels, source.labels) == ("brats", ("tof",), None)
    assert [p.name for p in source.cases[1].image_files] == ["Tof_002_tof.nii.gz"]
    assert source.cases[1].label_file.name == "Tof_002_seg.nii.gz"
    store = tmp_path / "s.zarr"
    args = ["ingest", str(root), str(store), "--layout", "auto", "--chunks", "4", "8", "8"]
    assert main([*args, "--no-progress"]) == 0
    ingested = open_store(store)
    assert ingested.channels == ("tof",) and ingested.case_ids == ("Tof_001", "Tof_002")
    assert ingested.label_mapping == {0: 0, 1: 1}
    assert ingested.classes == ("background", "label_1")
    named = tmp_path / "named.zarr"
    named_args = ["ingest", str(root), str(named), "--label-names", "1=aneurysm", "--no-progress"]
    assert main(named_args) == 0
    assert open_store(named).classes == ("background", "aneurysm")
    with pytest.raises(SystemExit):
        main(["ingest", str(root), str(tmp_path / "bad.zarr"), "--label-names", "aneurysm"])


def test_case_folders_channels_sorted_and_read_in_that_order(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d", channels=("t2", "adc"), values=(1, 3))
    source = discover(root, layout="brats")
    assert source.channels == ("adc", "t2")
    assert [p.name for p in source.cases[0].image_files] == [
        "Tof_001_adc.nii.gz", "Tof_001_t2.nii.gz"
    ]  # fmt: skip
    raw = read_case(source.cases[0])
    written = make_image(2, seed=0)  # channel 0 went to _t2, channel 1 to _adc
    np.testing.assert_array_equal(raw.image, written[[1, 0]])
    np.testing.assert_array_equal(raw.label, make_label((1, 3), seed=0))


def test_case_folders_missing_channel_names_case_and_file(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "d", channels=("tof", "mask"))
    missing = root / "Tof_002" / "Tof_002_mask.nii.gz"
    missing.unlink()
    source = discover(root)
    assert source.channels == ("mask", "tof")
    read_case(source.cases[0])
    with pytest.raises(InputError, match="missing image file") as info:
        read_case(source.cases[1])
    assert info.value.case == "Tof_002" and Path(info.value.path) == missing


def test_case_folders_need_the_folder_named_after_the_case(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    save_nifti(tmp_path / "flat" / "scan_tof.nii.gz", make_image(1)[0])  # flat: not a case folder
    with pytest.raises(InputError, match="no known dataset layout"):
        discover(tmp_path / "flat")


def test_auto_lists_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(InputError, match="no known dataset layout") as info:
        discover(tmp_path)
    assert "dataset.json" in str(info.value) and "_t1ce" in str(info.value)
    with pytest.raises(InputError, match="unknown layout"):
        discover(tmp_path, layout="dicom")


@pytest.mark.parametrize(
    "writer",
    [
        lambda p: write_brats(p),
        lambda p: write_msd(p),
        lambda p: write_msd(p, nnunet=True),
        lambda p: write_hdf5(p),
        lambda p: write_numpy(p),
        lambda p: write_numpy(p, npz=True),
    ],
    ids=["brats", "msd4d", "nnunet", "hdf5", "npy", "npz"],
)
def test_read_case_axis_order_and_geometry(tmp_path: Path, writer) -> None:
    source = discover(writer(tmp_path / "d"))
    raw = read_case(source.cases[0])
    n = len(source.channels)
    np.testing.assert_array_equal(raw.image, make_image(n, seed=0))
    assert raw.label is not None and raw.label.shape == raw.image.shape[1:]
    assert raw.image.dtype == np.float32
    if source.layout in ("brats", "msd"):
        np.testing.assert_allclose(raw.affine, AFFINE)
    if source.layout in ("brats", "msd", "hdf5"):
        assert raw.spacing == pytest.approx(SPACING)


def _corrupt(root: Path, kind: str) -> Path:
    """Make case B_002 of a BraTS folder bad in one way; return the file that shows it."""
    case = root / "B_002"
    if kind == "missing modality":
        (case / "B_002_t2.nii.gz").unlink()
        return case / "B_002_t2.nii.gz"
    if kind == "truncated":
        path = case / "B_002_flair.nii.gz"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path
    if kind == "not gzip":
        path = case / "B_002_t1.nii.gz"
        path.write_bytes(b"not a nifti file at all")
        return path
    if kind == "nan":
        image = make_image(4)[1]
        image[5, 5, 5] = np.nan
        return save_nifti(case / "B_002_t1ce.nii.gz", image)
    if kind == "all zero":
        return save_nifti(case / "B_002_t2.nii.gz", np.zeros((12, 16, 20), np.float32))
    if kind == "channel shape":
        return save_nifti(case / "B_002_flair.nii.gz", np.ones((12, 16, 18), np.float32))
    if kind == "channel affine":
        return save_nifti(case / "B_002_flair.nii.gz", make_image(4)[3], AFFINE * 2)
    if kind == "label shape":
        return save_nifti(case / "B_002_seg.nii.gz", np.zeros((12, 16, 21), np.int16))
    if kind == "label affine":
        shifted = AFFINE.copy()
        shifted[0, 3] += 3
        return save_nifti(case / "B_002_seg.nii.gz", make_label(), shifted)
    if kind == "label not integer":
        return save_nifti(case / "B_002_seg.nii.gz", make_label().astype(np.float32) + 0.5)
    raise AssertionError(kind)


BAD_KINDS = [
    ("missing modality", "missing image file"),
    ("truncated", "unreadable or truncated"),
    ("not gzip", "unreadable or truncated"),
    ("nan", "NaN or Inf"),
    ("all zero", "all zero"),
    ("channel shape", "channel shape"),
    ("channel affine", "channel affine"),
    ("label shape", "label shape"),
    ("label affine", "label affine"),
    ("label not integer", "non-integer"),
]


@pytest.mark.parametrize(("kind", "problem"), BAD_KINDS, ids=[k for k, _ in BAD_KINDS])
def test_bad_case_names_case_and_file(tmp_path: Path, kind: str, problem: str) -> None:
    root = write_brats(tmp_path / "b")
    bad_file = _corrupt(root, kind)
    source = discover(root)
    read_case(source.cases[0])  # the good case still reads
    with pytest.raises(InputError) as info:
        read_case(source.cases[1])
    err = info.value
    assert err.case == "B_002"
    assert Path(err.path) == bad_file
    assert problem in err.problem
    assert "B_002" in str(err) and bad_file.name in str(err)


def test_gzip_truncated_at_the_end_is_caught(tmp_path: Path) -> None:
    root = write_brats(tmp_path / "b", ids=("B_001",))
    path = root / "B_001" / "B_001_seg.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[:-12])  # lost the gzip trailer and some data
    with pytest.raises(InputError, match="truncated label file"):
        read_case(discover(root).cases[0])


def test_layouts_come_from_one_registry(tmp_path: Path) -> None:
    from partseg.cli import build_parser
    from partseg.store.sources import LAYOUTS

    assert LAYOUTS.names() == ("msd", "brats", "nnunet-images", "hdf5", "numpy")  # auto's order
    ingest = build_parser()._subparsers._group_actions[0].choices["ingest"]
    layout = next(a for a in ingest._actions if a.dest == "layout")
    assert tuple(layout.choices) == ("auto", *LAYOUTS.names())
    with pytest.raises(InputError, match="use one of auto, msd, brats, nnunet-images, hdf5, numpy"):
        discover(tmp_path, layout="nifti")
    with pytest.raises(InputError, match=r"no numpy cases found.*expected \*\.npy images"):
        discover(tmp_path, layout="numpy")
    with pytest.raises(InputError) as err:
        discover(tmp_path)
    assert all(f"{name}: {LAYOUTS.get(name).looked_for}" in str(err.value) for name in LAYOUTS)


def test_case_folder_plus_flat_files_of_one_id_is_an_error(tmp_path: Path) -> None:
    root = write_brats(tmp_path / "b")
    write_brats(root, ids=("B_001",), flat=True)  # the same case again, flat
    with pytest.raises(
        InputError, match=r"another file gives the same channel '\w+': .*/B_001/B_001_\w+\.nii\.gz"
    ):
        discover(root)


def test_nii_and_nii_gz_of_one_modality_is_an_error(tmp_path: Path) -> None:
    root = write_brats(tmp_path / "b")
    save_nifti(root / "B_002" / "B_002_seg.nii", make_label(seed=1))
    with pytest.raises(InputError) as info:
        discover(root)
    assert "B_002_seg.nii;" in str(info.value) and "B_002_seg.nii.gz)" in str(info.value)


@pytest.mark.parametrize(
    "extra", ["n_0.npz", "n_0.h5"], ids=["npy+npz", "npy+h5-other-layout-ignored"]
)
def test_numpy_duplicate_ids_are_an_error(tmp_path: Path, extra: str) -> None:
    root = write_numpy(tmp_path / "n")
    np.savez(root / "n_0.npz", image=make_image(3), label=make_label((1, 2)))
    with pytest.raises(InputError, match=r"another file gives the same case: .*n_0\.np"):
        discover(root)


def test_msd_single_and_per_channel_files_of_one_id_is_an_error(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "m")
    save_nifti(root / "imagesTr" / "prostate_00_0000.nii.gz", make_image(1)[0])
    with pytest.raises(InputError, match="another file gives the same case"):
        discover(root)


def test_msd_odd_case_name_is_reported_not_skipped(tmp_path: Path) -> None:
    from partseg.store.ingest import ingest

    root = write_msd(tmp_path / "m")
    save_nifti(root / "imagesTr" / "..case2.nii.gz", make_image(2))
    save_nifti(root / "imagesTr" / "._prostate_00.nii.gz", make_image(2))  # macOS metadata
    assert [c.case_id for c in discover(root).cases] == ["..case2", "prostate_00", "prostate_01"]
    with pytest.raises(InputError, match=r"case '\.\.case2': the case id is not a safe name"):
        ingest(root, tmp_path / "s.zarr", progress=False)
    report = ingest(root, tmp_path / "s.zarr", skip_bad=True, progress=False)
    assert [b["case"] for b in report.bad] == ["..case2"]
    assert report.written == ["prostate_00", "prostate_01"]
