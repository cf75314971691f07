"""Tests of :mod:`partseg.evaluation` on tiny NIfTI folders, stores and probability stores.

The helpers at the top (``save``, ``brats_cases``, ``write_folders``, ``write_store``) are also
used by ``tests/test_cli_evaluate.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from partseg.errors import ConfigError, InputError
from partseg.evaluation import (
    SeamSources,
    case_id_from_name,
    csv_rows,
    evaluate_folders,
    format_table,
    parse_labels_map,
    probability_path,
    seam_section,
)
from partseg.infer.stitch import ZarrBackend

# (Z, Y, X) spacing 3 x 1 x 1 mm, written to NIfTI as pixdim (x, y, z) = (1, 1, 3)
SPACING_ZYX = (3.0, 1.0, 1.0)
SHAPE = (4, 2, 5)
BRATS_NAMES = ["background", "necrotic", "edema", "enhancing"]


def save(path: Path, zyx: np.ndarray, spacing_zyx=SPACING_ZYX) -> Path:
    """Write (Z, Y, X) labels as a NIfTI file in (X, Y, Z) order."""
    affine = np.diag([*reversed(spacing_zyx), 1.0])
    nib.save(nib.Nifti1Image(np.asarray(zyx, np.int16).T, affine), str(path))
    return path


def brats_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two cases in original BraTS labels, worked out by hand.

    c1: GT enhancing (4) on the row z=0, y=0 (5 voxels); the prediction has that row and the
        row z=1 (10 voxels): TP 5, FP 5 -> Dice 10/15. Every voxel of these one-voxel-thick rows
        is surface; distances: 5 GT voxels -> 0, 5 prediction voxels on z=0 -> 0, 5 on z=1 ->
        3 mm (the Z spacing). Pooled 15 values, ten 0 and five 3: HD = HD95 = 3 mm.
        Necrotic and edema are absent on both sides: Dice 1, HD95 0.
    c2: necrotic (1) and edema (2) voxels predicted exactly; enhancing absent on both sides.
    """
    gt1 = np.zeros(SHAPE, np.int16)
    gt1[0, 0, :] = 4
    pred1 = gt1.copy()
    pred1[1, 0, :] = 4
    gt2 = np.zeros(SHAPE, np.int16)
    gt2[2, 1, 2], gt2[2, 1, 3] = 1, 2
    return {"c1": (pred1, gt1), "c2": (gt2.copy(), gt2)}


def write_folders(root: Path) -> tuple[Path, Path]:
    """``root/pred`` (``c1.nii.gz``, ``c2_pred.nii.gz``) and ``root/gt`` (``*_seg``)."""
    pred_dir, gt_dir = root / "pred", root / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    cases = brats_cases()
    save(pred_dir / "c1.nii.gz", cases["c1"][0])
    save(gt_dir / "c1_seg.nii.gz", cases["c1"][1])
    save(pred_dir / "c2_pred.nii.gz", cases["c2"][0])
    save(gt_dir / "c2_seg.nii.gz", cases["c2"][1])
    return pred_dir, gt_dir


def write_store(
    path: Path,
    labels: Mapping[str, np.ndarray],
    images: Mapping[str, np.ndarray] | None = None,
    *,
    classes: Sequence[str] = tuple(BRATS_NAMES),
    label_mapping: Sequence[tuple[int, int]] = ((0, 0), (1, 1), (2, 2), (4, 3)),
    chunks: tuple[int, int, int] = (2, 2, 2),
    attrs: Mapping[str, object] | None = None,
) -> Path:
    """A tiny partseg store: (Z, Y, X) labels in class ids, one channel (zeros by default);
    ``attrs`` are added to every case's attrs (e.g. ``original_shape``)."""
    from partseg.store import create_store

    index = {
        "case_ids": list(labels),
        "channels": ["t1"],
        "classes": list(classes),
        "label_mapping": [list(pair) for pair in label_mapping],
        "chunks": list(chunks),
        "dtype": "float32",
    }
    writer = create_store(path, index)
    for case_id, label in labels.items():
        case_attrs = {
            "shape": list(label.shape),
            "spacing": list(SPACING_ZYX),
            "channels": ["t1"],
            "has_label": True,
            **(attrs or {}),
        }
        image = np.zeros((1, *label.shape), np.float32) if images is None else images[case_id]
        writer.write_case(
            case_id, image, label.astype(np.uint8), case_attrs, np.zeros((0, 4)), chunks
        )
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return write_folders(tmp_path)


def test_case_ids_and_labels_map() -> None:
    assert case_id_from_name("BraTS20_Training_001_seg.nii.gz") == "BraTS20_Training_001"
    assert case_id_from_name("BraTS20_Training_001.nii.gz") == "BraTS20_Training_001"
    assert case_id_from_name("x_pred.nii") == "x"
    assert case_id_from_name("x_seg_t1.nii.gz") == "x_seg_t1"
    assert parse_labels_map("0:0,1:1,2:2,4:3") == {0: 0, 1: 1, 2: 2, 4: 3}
    with pytest.raises(ConfigError):
        parse_labels_map("0-0")
    with pytest.raises(ConfigError, match="contiguous"):
        parse_labels_map("0:0,4:3")


def test_brats_folders_metrics_and_summary(folders) -> None:
    report = evaluate_folders(*folders)
    assert report["classes"] == BRATS_NAMES
    assert report["label_mapping"] == "brats"
    assert report["skipped"] == [] and report["seams"] is None
    c1 = report["cases"]["c1"]
    assert c1["pred"].endswith("c1.nii.gz") and c1["gt"].endswith("c1_seg.nii.gz")
    assert c1["spacing"] == list(SPACING_ZYX) and c1["shape"] == list(SHAPE)
    assert c1["classes"]["enhancing"]["dice"] == pytest.approx(10 / 15)
    assert c1["classes"]["enhancing"]["hd95"] == pytest.approx(3.0)
    assert c1["classes"]["enhancing"]["hd"] == pytest.approx(3.0)
    assert c1["classes"]["enhancing"]["gt_volume_ml"] == pytest.approx(5 * 3.0 / 1000)
    assert c1["classes"]["necrotic"]["dice"] == 1.0 and c1["classes"]["necrotic"]["hd95"] == 0.0
    for region in ("whole_tumor", "tumor_core", "enhancing_tumor"):
        assert c1["regions"][region]["dice"] == pytest.approx(10 / 15)
    # 40 voxels: 35 GT background, 5 of them predicted enhancing; 5 enhancing found
    assert c1["confusion_matrix"] == [[30, 0, 0, 5], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 5]]
    summary = report["summary"]
    assert summary["classes"]["enhancing"]["dice"]["mean"] == pytest.approx((10 / 15 + 1) / 2)
    assert summary["classes"]["enhancing"]["n_gt_empty"] == 1
    assert summary["regions"]["whole_tumor"]["dice"]["mean"] == pytest.approx((10 / 15 + 1) / 2)
    assert summary["classes"]["necrotic"]["hd95"]["mean"] == 0.0


def test_csv_rows_and_table(folders) -> None:
    report = evaluate_folders(*folders)
    header, rows = csv_rows(report["cases"], report["summary"])
    assert header[:3] == ["case", "section", "target"] and "dice" in header
    by_key = {tuple(r[:3]): dict(zip(header, r, strict=True)) for r in rows}
    assert by_key["c1", "classes", "enhancing"]["dice"] == pytest.approx(10 / 15)
    assert by_key["c1", "classes", "enhancing"]["hd95"] == pytest.approx(3.0)
    assert by_key["mean", "regions", "tumor_core"]["dice"] == pytest.approx(5 / 6)
    assert len(rows) == 2 * 6 + 3 * 6  # 2 cases + mean/std/median, 3 classes + 3 regions
    table = format_table(report["cases"], report["summary"])
    assert "whole_tumor" in table and table.splitlines()[-1].startswith("mean")
    assert "0.667" in table.splitlines()[2]  # c1: enhancing Dice 10/15


def test_missing_cases_warn_through_the_callback(folders) -> None:
    pred_dir, gt_dir = folders
    (pred_dir / "c2_pred.nii.gz").unlink()
    save(pred_dir / "c9.nii.gz", np.zeros(SHAPE, np.int16))
    with pytest.raises(InputError, match=r"only in GT.*c2.*only in PRED.*c9"):
        evaluate_folders(pred_dir, gt_dir)
    messages: list[str] = []
    report = evaluate_folders(pred_dir, gt_dir, allow_missing=True, warn=messages.append)
    assert list(report["cases"]) == ["c1"] and report["skipped"] == ["c2", "c9"]
    assert len(messages) == 1 and messages[0].startswith("skipping")
    with pytest.warns(UserWarning, match="skipping"):
        evaluate_folders(pred_dir, gt_dir, allow_missing=True)


def test_non_brats_labels_get_generic_names_and_no_regions(tmp_path: Path) -> None:
    gt = np.zeros(SHAPE, np.int16)
    gt[0, 0, :2] = 1
    gt[3, 1, 4] = 2
    pred = gt.copy()
    pred[0, 0, 0] = 0  # class 1: TP 1, FN 1 -> Dice 2/3
    files = save(tmp_path / "a_pred.nii.gz", pred), save(tmp_path / "a_seg.nii.gz", gt)
    report = evaluate_folders(*files)
    assert report["classes"] == ["background", "class_1", "class_2"]
    assert report["regions"] == {} and report["cases"]["a"]["regions"] == {}
    assert report["cases"]["a"]["classes"]["class_1"]["dice"] == pytest.approx(2 / 3)
    report = evaluate_folders(*files, classes=["bg", "vessel", "aneurysm"])
    assert set(report["cases"]["a"]["classes"]) == {"vessel", "aneurysm"}


def test_labels_map(tmp_path: Path) -> None:
    gt = np.zeros(SHAPE, np.int16)
    gt[1, 1, 1] = 7
    files = save(tmp_path / "p.nii.gz", gt), save(tmp_path / "g.nii.gz", gt)
    report = evaluate_folders(*files, labels_map="0:0,7:1", regions="none")
    assert report["classes"] == ["background", "class_1"]
    assert report["label_mapping"] == {"0": 0, "7": 1}
    assert report["cases"]["g"]["classes"]["class_1"]["gt_voxels"] == 1
    assert evaluate_folders(*files, labels_map={0: 0, 7: 1})["cases"] == report["cases"]
    with pytest.raises(InputError, match=r"\[7\]"):
        evaluate_folders(*files, labels_map="0:0,1:1")


def test_two_dimensional_files(tmp_path: Path) -> None:
    gt = np.zeros((3, 4), np.int16)  # (Y, X)
    gt[0, :] = 1
    pred = np.zeros_like(gt)
    pred[2, :] = 1  # two rows further at 2.5 mm per row: 5 mm
    affine = np.diag([1.0, 2.5, 1.0, 1.0])
    nib.save(nib.Nifti1Image(pred.T, affine), str(tmp_path / "s_pred.nii.gz"))
    nib.save(nib.Nifti1Image(gt.T, affine), str(tmp_path / "s_seg.nii.gz"))
    report = evaluate_folders(tmp_path / "s_pred.nii.gz", tmp_path / "s_seg.nii.gz")
    case = report["cases"]["s"]
    assert case["spacing"] == [2.5, 1.0]
    assert case["classes"]["class_1"]["hd95"] == pytest.approx(5.0)


def test_nifti_predictions_against_a_store(folders, tmp_path: Path) -> None:
    pred_dir, _ = folders
    gt_ids = {k: np.where(gt == 4, 3, gt) for k, (_, gt) in brats_cases().items()}  # class ids
    store = write_store(tmp_path / "gt.zarr", gt_ids)
    report = evaluate_folders(pred_dir, store)
    assert report["label_mapping"] == {"0": 0, "1": 1, "2": 2, "4": 3}
    assert report["cases"]["c1"]["gt"] == f"{store}#c1"
    assert report["cases"]["c1"]["spacing"] == list(SPACING_ZYX)
    assert report["cases"]["c1"]["regions"]["whole_tumor"]["dice"] == pytest.approx(10 / 15)
    assert report["cases"]["c2"]["classes"]["edema"]["dice"] == 1.0
    pred_store = write_store(tmp_path / "pred.zarr", gt_ids)
    report = evaluate_folders(pred_store, store)
    assert report["summary"]["classes"]["enhancing"]["dice"]["mean"] == 1.0


# --------------------------------------------------------------------------------------------
# Seams
# --------------------------------------------------------------------------------------------


def write_probabilities(folder: Path, case_id: str, values: np.ndarray, core=(2, 2, 2)) -> Path:
    """``folder/<case>_probabilities.zarr`` as partseg predict writes it (fp16, chunk = core)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = probability_path(folder, case_id)
    attrs = {"case_id": case_id, "axes": "KZYX", "core": list(core)}
    backend = ZarrBackend.create(path, values.shape, (values.shape[0], *core), np.float16, attrs)
    backend.write((slice(None),) * values.ndim, values.astype(np.float16))
    return path


def ramp_probabilities(step: float = 0.0) -> np.ndarray:
    """(2, 4, 4, 4) probabilities: p1 rises by 1/16 per X voxel, plus ``step`` from x = 2 on."""
    x = np.broadcast_to(np.arange(4.0), (4, 4, 4))
    p1 = x / 16 + step * (x >= 2)
    return np.stack([1 - p1, p1])


def test_seam_section_index_and_reference_error(tmp_path: Path) -> None:
    write_probabilities(tmp_path / "smooth", "c1", ramp_probabilities())
    write_probabilities(tmp_path / "seam", "c1", ramp_probabilities(step=0.5))
    smooth = seam_section("c1", SeamSources(tmp_path / "smooth"))
    assert smooth == {"probabilities": {"seam_index": pytest.approx(1.0)}}
    # Along X, |delta p1| = 1/16 inside cores and 1/16 + 1/2 across the face at x = 2, on both
    # channels; Y and Z differences are 0 (interior pairs, 1 face pair per core pair).
    # faces: X (16 pairs, 9/16 each) + Y, Z (16 pairs each, 0); interior: X (32 pairs, 1/16)
    # + Y, Z (32 pairs each, 0): (16 * 9/16 / 48) / (32 * 1/16 / 96) = 9.
    seam = seam_section("c1", SeamSources(tmp_path / "seam", tmp_path / "smooth"))["probabilities"]
    assert seam["seam_index"] == pytest.approx(9.0)
    assert seam["max_abs"] == pytest.approx(0.5, abs=1e-3)  # fp16 storage
    assert seam["mean_abs"] == pytest.approx(0.25, abs=1e-3)  # half of the voxels step
    assert seam["changed_label_share"] == pytest.approx(0.5)  # p1 = 0.625 > 0.5 from x = 2 on


def test_seams_are_summarised_and_listed(tmp_path: Path) -> None:
    gt = np.zeros((4, 4, 4), np.int16)
    gt[:, :, 2:] = 1
    save(tmp_path / "c1_pred.nii.gz", gt)
    save(tmp_path / "c1_seg.nii.gz", gt)
    write_probabilities(tmp_path / "probs", "c1", ramp_probabilities(step=0.5))
    write_probabilities(tmp_path / "ref", "c1", ramp_probabilities())
    pair = tmp_path / "c1_pred.nii.gz", tmp_path / "c1_seg.nii.gz"
    report = evaluate_folders(*pair, seams=tmp_path / "probs", seam_reference=tmp_path / "ref")
    assert report["seams"] == str(tmp_path / "probs")
    seam = report["summary"]["seam"]["probabilities"]
    assert seam["seam_index"]["mean"] == pytest.approx(9.0) and seam["n_cases"] == 1
    assert seam["changed_label_share"]["mean"] == pytest.approx(0.5)
    header, rows = csv_rows(report["cases"], report["summary"])
    seam_row = next(r for r in rows if r[:3] == ["c1", "seam", "probabilities"])
    row = dict(zip(header, seam_row, strict=True))
    assert row["seam_index"] == pytest.approx(9.0) and row["dice"] == ""
    table = format_table(report["cases"], report["summary"]).splitlines()
    assert table[-3].split() == ["seam", "seam_index", "max_abs", "mean_abs", "changed_label_share"]
    assert table[-2].split()[:2] == ["c1", "9"]


def test_missing_or_bad_probability_files_name_the_case_and_file(tmp_path: Path) -> None:
    gt = np.zeros(SHAPE, np.int16)
    pair = save(tmp_path / "c1_pred.nii.gz", gt), save(tmp_path / "c1_seg.nii.gz", gt)
    (tmp_path / "probs").mkdir()
    with pytest.raises(InputError, match=r"'c1'.*stitched probability file is missing") as err:
        evaluate_folders(*pair, seams=tmp_path / "probs")
    assert err.value.path == str(tmp_path / "probs" / "c1_probabilities.zarr")
    write_probabilities(tmp_path / "probs", "c1", ramp_probabilities())
    (tmp_path / "ref").mkdir()
    with pytest.raises(InputError, match="reference probability file is missing") as err:
        evaluate_folders(*pair, seams=tmp_path / "probs", seam_reference=tmp_path / "ref")
    assert err.value.case == "c1" and err.value.path.endswith("c1_probabilities.zarr")
    write_probabilities(tmp_path / "ref", "c1", ramp_probabilities()[:, :2], core=(2, 2, 2))
    with pytest.raises(InputError, match="differ in shape"):
        seam_section("c1", SeamSources(tmp_path / "probs", tmp_path / "ref"))
    with pytest.raises(ConfigError, match="needs --seams"):
        evaluate_folders(*pair, seam_reference=tmp_path / "ref")
    with pytest.raises(InputError, match="does not exist"):
        evaluate_folders(*pair, seams=tmp_path / "nowhere")
