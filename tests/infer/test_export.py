"""Export: inverse label mapping, uncrop, resample back, NIfTI axis order and affine."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from partseg.errors import StoreError
from partseg.infer.export import (
    export_case,
    labels_to_original,
    labels_to_original_grid,
    probabilities_to_original_grid,
    resize_nearest,
)
from partseg.infer.predictor import ArrayCase

MAPPING = {0: 0, 1: 1, 2: 2, 4: 3}  # BraTS


def _case(shape=(3, 4, 5)) -> ArrayCase:
    affine = np.array([[1.5, 0, 0, -10], [0, 1.2, 0, 5], [0, 0, 2, 7.5], [0, 0, 0, 1.0]])
    attrs = {
        "original_shape": [6, 8, 9],
        "crop_box": {"start": [1, 2, 3], "size": [3, 4, 5]},
        "affine": affine.tolist(),
    }
    return ArrayCase("c1", np.zeros((1, *shape), np.float32), attrs=attrs)


def test_labels_go_back_to_brats_values():
    assert labels_to_original(np.array([[0, 1], [2, 3]]), MAPPING).tolist() == [[0, 1], [2, 4]]


def test_uncrop_places_the_prediction_at_the_crop_box():
    labels = (np.arange(60).reshape(3, 4, 5) % 4).astype(np.uint8)
    full = labels_to_original_grid(labels, _case().attrs, MAPPING)
    assert full.shape == (6, 8, 9)
    np.testing.assert_array_equal(full[1:4, 2:6, 3:8], labels_to_original(labels, MAPPING))
    assert full.sum() == labels_to_original(labels, MAPPING).sum()


def test_resampled_store_is_resized_back_nearest():
    labels = np.zeros((3, 2, 5), np.uint8)
    labels[:, 1] = 3  # stored at half the Y resolution of the crop box (4)
    full = labels_to_original_grid(labels, _case().attrs, MAPPING)
    assert full[1:4, 2:4, 3:8].max() == 0 and (full[1:4, 4:6, 3:8] == 4).all()
    assert resize_nearest(np.arange(3)[None], (1, 6)).tolist() == [[0, 0, 1, 1, 2, 2]]


def test_export_writes_xyz_nifti_with_the_original_affine(tmp_path):
    case = _case()
    labels = (np.arange(60).reshape(3, 4, 5) % 4).astype(np.uint8)
    probabilities = np.stack([1 - labels / 4, labels / 4]).astype(np.float32)
    paths = export_case(case, labels, tmp_path, MAPPING, probabilities=probabilities)
    assert [p.name for p in paths] == ["c1.nii.gz", "c1_probabilities.nii.gz"]
    image = nib.load(str(paths[0]))
    data = np.asarray(image.dataobj)
    assert data.shape == (9, 8, 6)  # (X, Y, Z)
    np.testing.assert_allclose(image.affine, case.attrs["affine"])
    np.testing.assert_array_equal(
        data.transpose(2, 1, 0), labels_to_original_grid(labels, case.attrs, MAPPING)
    )
    probs = np.asarray(nib.load(str(paths[1])).dataobj)
    assert probs.shape == (9, 8, 6, 2)
    np.testing.assert_allclose(
        probs.transpose(3, 2, 1, 0), probabilities_to_original_grid(probabilities, case.attrs)
    )
    assert probs[0, 0, 0].tolist() == [1.0, 0.0]  # outside the crop: background
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_of_a_phantom_case_keeps_the_source_header(tmp_path):
    from partseg.geometry import Box
    from partseg.phantom.cases import make_case
    from partseg.phantom.files import write_case
    from partseg.store import open_store
    from partseg.store.ingest import IngestSettings, ingest

    folder = write_case(make_case(0, (24, 32, 32), kind="brats-simple"), tmp_path / "raw")
    ingest(tmp_path / "raw", tmp_path / "s.zarr", IngestSettings(chunks=(8, 8, 8)), progress=False)
    store = open_store(tmp_path / "s.zarr")
    case = store["Phantom_001"]
    assert case.shape != (24, 32, 32)  # cropped to the head: export must undo it
    _, label = case.read(Box.whole(case.shape))
    (path,) = export_case(case, label, tmp_path, store.label_mapping)
    source, exported = (nib.load(str(p)) for p in (folder / "Phantom_001_seg.nii.gz", path))
    for key in ("sform_code", "qform_code", "xyzt_units"):
        assert int(exported.header[key]) == int(source.header[key]), key
    assert int(source.header["sform_code"]) == int(source.header["qform_code"]) == 1
    np.testing.assert_allclose(exported.affine, source.affine)
    np.testing.assert_allclose(exported.header.get_qform(), source.header.get_qform())
    np.testing.assert_allclose(exported.header.get_sform(), source.header.get_sform())
    np.testing.assert_array_equal(np.asarray(exported.dataobj), np.asarray(source.dataobj))
    assert set(np.unique(np.asarray(exported.dataobj)).tolist()) == {0, 1, 2, 4}  # BraTS values


def test_stores_without_a_header_record_keep_nibabel_codes_and_damaged_ones_fail(tmp_path):
    case = _case()
    labels = np.zeros((3, 4, 5), np.uint8)
    (path,) = export_case(case, labels, tmp_path, MAPPING)
    header = nib.load(str(path)).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (2, 0)
    case.attrs["nifti_header"] = {"sform_code": 9, "qform_code": 1, "qform": [[1]]}
    with pytest.raises(StoreError, match=r"'c1'.*NIfTI header.*re-ingest"):
        export_case(case, labels, tmp_path, MAPPING)


def test_a_2mm_store_exports_on_the_original_grid(tmp_path):
    """A realistic phantom ingested at twice its voxel size: its stored (coarse) labels export
    on the original grid, with the original affine, close to the original segmentation."""
    from partseg.phantom import write_phantoms
    from partseg.store.ingest import IngestSettings, ingest
    from partseg.store.zarrstore import open_store

    shape = (31, 48, 48)  # the BraTS field of view in 5 mm voxels
    write_phantoms(tmp_path / "raw", 1, shape, seed=2, progress=False)
    spacing = tuple(2 * fov / n for fov, n in zip((155, 240, 240), shape, strict=True))
    ingest(tmp_path / "raw", tmp_path / "s.zarr", IngestSettings(spacing=spacing), progress=False)
    store = open_store(tmp_path / "s.zarr")
    case = store["Phantom_001"]
    assert all(a < b for a, b in zip(case.shape, case.crop_box.size, strict=True))
    labels = case.read_label()  # a perfect prediction at the coarse grid
    probabilities = np.stack([labels == k for k in range(4)]).astype(np.float32)
    paths = export_case(case, labels, tmp_path, store.label_mapping, probabilities=probabilities)
    exported = nib.load(str(paths[0]))
    seg = nib.load(str(tmp_path / "raw/Phantom_001/Phantom_001_seg.nii.gz"))
    assert exported.shape == seg.shape  # (X, Y, Z) of the original scan
    np.testing.assert_allclose(exported.affine, seg.affine)
    ours, truth = np.asarray(exported.dataobj) > 0, np.asarray(seg.dataobj) > 0
    dice = 2 * (ours & truth).sum() / (ours.sum() + truth.sum())
    assert dice > 0.8  # whole tumour survives 2x down and up (nearest)
    assert set(np.unique(np.asarray(exported.dataobj))) <= {0, 1, 2, 4}
    probs = nib.load(str(paths[1]))
    assert probs.shape == (*seg.shape, 4)
    np.testing.assert_allclose(np.asarray(probs.dataobj).sum(-1), 1.0, atol=1e-5)
