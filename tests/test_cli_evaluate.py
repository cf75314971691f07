"""Tests of ``partseg evaluate`` on tiny NIfTI folders (and a tiny store)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from partseg.cli import main
from partseg.cli.evaluate import case_id_from_name, parse_labels_map
from partseg.errors import ConfigError

# (Z, Y, X) spacing 3 x 1 x 1 mm, written to NIfTI as pixdim (x, y, z) = (1, 1, 3)
SPACING_ZYX = (3.0, 1.0, 1.0)
SHAPE = (4, 2, 5)


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


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    cases = brats_cases()
    save(pred_dir / "c1.nii.gz", cases["c1"][0])
    save(gt_dir / "c1_seg.nii.gz", cases["c1"][1])
    save(pred_dir / "c2_pred.nii.gz", cases["c2"][0])
    save(gt_dir / "c2_seg.nii.gz", cases["c2"][1])
    return pred_dir, gt_dir


def test_case_ids_and_labels_map() -> None:
    assert case_id_from_name("BraTS20_Training_001_seg.nii.gz") == "BraTS20_Training_001"
    assert case_id_from_name("BraTS20_Training_001.nii.gz") == "BraTS20_Training_001"
    assert case_id_from_name("x_pred.nii") == "x"
    assert case_id_from_name("x_seg_t1.nii.gz") == "x_seg_t1"
    assert parse_labels_map("0:0,1:1,2:2,4:3") == {0: 0, 1: 1, 2: 2, 4: 3}
    with pytest.raises(ConfigError):
        parse_labels_map("0-0")


def test_folders_give_json_csv_and_table(folders, tmp_path: Path, capsys) -> None:
    pred_dir, gt_dir = folders
    out_json, out_csv = tmp_path / "out" / "m.json", tmp_path / "m.csv"
    argv = [str(pred_dir), str(gt_dir), "--json", str(out_json), "--csv", str(out_csv)]
    assert main(["evaluate", *argv]) == 0
    table = capsys.readouterr().out
    assert "whole_tumor" in table and table.splitlines()[-1].startswith("mean")

    report = json.loads(out_json.read_text())
    assert report["classes"] == ["background", "necrotic", "edema", "enhancing"]
    assert report["label_mapping"] == "brats"
    c1 = report["cases"]["c1"]
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

    rows = list(csv.DictReader(out_csv.open()))
    by_key = {(r["case"], r["section"], r["target"]): r for r in rows}
    assert float(by_key["c1", "classes", "enhancing"]["dice"]) == pytest.approx(10 / 15)
    assert float(by_key["c1", "classes", "enhancing"]["hd95"]) == pytest.approx(3.0)
    assert float(by_key["mean", "regions", "tumor_core"]["dice"]) == pytest.approx(5 / 6)
    assert len(rows) == 2 * 6 + 3 * 6  # 2 cases + mean/std/median, 3 classes + 3 regions
    assert not list(tmp_path.glob("**/*.tmp"))  # atomic writes leave no temporary file


def test_two_files_and_json_on_stdout(folders, capsys) -> None:
    pred_dir, gt_dir = folders
    argv = ["evaluate", str(pred_dir / "c1.nii.gz"), str(gt_dir / "c1_seg.nii.gz"), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["cases"]) == ["c1"]
    assert report["cases"]["c1"]["classes"]["enhancing"]["dice"] == pytest.approx(10 / 15)


def test_shape_mismatch_exits_2_naming_case_and_files(folders, capsys) -> None:
    pred_dir, gt_dir = folders
    save(pred_dir / "c2_pred.nii.gz", np.zeros((4, 2, 6), np.int16))
    assert main(["evaluate", str(pred_dir), str(gt_dir)]) == 2
    err = capsys.readouterr().err
    assert "'c2'" in err and "c2_pred.nii.gz" in err and "c2_seg.nii.gz" in err
    assert "(4, 2, 6)" in err and "(4, 2, 5)" in err


def test_missing_cases_error_or_skip(folders, capsys, tmp_path: Path) -> None:
    pred_dir, gt_dir = folders
    (pred_dir / "c2_pred.nii.gz").unlink()
    save(pred_dir / "c9.nii.gz", np.zeros(SHAPE, np.int16))
    assert main(["evaluate", str(pred_dir), str(gt_dir)]) == 2
    err = capsys.readouterr().err
    assert "only in GT" in err and "c2" in err and "only in PRED" in err and "c9" in err
    out_json = tmp_path / "m.json"
    argv = ["evaluate", str(pred_dir), str(gt_dir), "--allow-missing", "--json", str(out_json)]
    assert main(argv) == 0
    assert "warning: skipping" in capsys.readouterr().err
    report = json.loads(out_json.read_text())
    assert list(report["cases"]) == ["c1"] and report["skipped"] == ["c2", "c9"]


def test_non_brats_labels_get_generic_names_and_no_regions(tmp_path: Path, capsys) -> None:
    gt = np.zeros(SHAPE, np.int16)
    gt[0, 0, :2] = 1
    gt[3, 1, 4] = 2
    pred = gt.copy()
    pred[0, 0, 0] = 0  # class 1: TP 1, FN 1 -> Dice 2/3
    save(tmp_path / "a_pred.nii.gz", pred)
    save(tmp_path / "a_seg.nii.gz", gt)
    argv = [str(tmp_path / "a_pred.nii.gz"), str(tmp_path / "a_seg.nii.gz"), "--json"]
    assert main(["evaluate", *argv]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["background", "class_1", "class_2"]
    assert report["regions"] == {} and report["cases"]["a"]["regions"] == {}
    assert report["cases"]["a"]["classes"]["class_1"]["dice"] == pytest.approx(2 / 3)
    named = [*argv, "--classes", "bg", "vessel", "aneurysm"]
    assert main(["evaluate", *named]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["cases"]["a"]["classes"]) == {"vessel", "aneurysm"}


def test_labels_map_option(tmp_path: Path, capsys) -> None:
    gt = np.zeros(SHAPE, np.int16)
    gt[1, 1, 1] = 7
    save(tmp_path / "p.nii.gz", gt)
    save(tmp_path / "g.nii.gz", gt)
    argv = ["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "g.nii.gz"), "--json"]
    assert main([*argv, "--labels-map", "0:0,7:1", "--regions", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["background", "class_1"]
    assert report["cases"]["g"]["classes"]["class_1"]["gt_voxels"] == 1
    assert main([*argv, "--labels-map", "0:0,1:1"]) == 2
    assert "[7]" in capsys.readouterr().err


def test_two_dimensional_files(tmp_path: Path, capsys) -> None:
    gt = np.zeros((3, 4), np.int16)  # (Y, X)
    gt[0, :] = 1
    pred = np.zeros_like(gt)
    pred[2, :] = 1  # two rows further at 2.5 mm per row: 5 mm
    affine = np.diag([1.0, 2.5, 1.0, 1.0])
    nib.save(nib.Nifti1Image(pred.T, affine), str(tmp_path / "s_pred.nii.gz"))
    nib.save(nib.Nifti1Image(gt.T, affine), str(tmp_path / "s_seg.nii.gz"))
    argv = [str(tmp_path / "s_pred.nii.gz"), str(tmp_path / "s_seg.nii.gz"), "--json"]
    assert main(["evaluate", *argv]) == 0
    case = json.loads(capsys.readouterr().out)["cases"]["s"]
    assert case["spacing"] == [2.5, 1.0]
    assert case["classes"]["class_1"]["hd95"] == pytest.approx(5.0)


def write_store(path: Path, cases: dict[str, np.ndarray]) -> Path:
    """A tiny partseg store of label arrays in contiguous class ids."""
    from partseg.store import create_store

    index = {
        "case_ids": list(cases),
        "channels": ["t1"],
        "classes": ["background", "necrotic", "edema", "enhancing"],
        "label_mapping": [[0, 0], [1, 1], [2, 2], [4, 3]],
        "chunks": [2, 2, 2],
        "dtype": "float32",
    }
    writer = create_store(path, index)
    for case_id, label in cases.items():
        attrs = {
            "shape": list(label.shape),
            "spacing": list(SPACING_ZYX),
            "channels": ["t1"],
            "has_label": True,
        }
        image = np.zeros((1, *label.shape), np.float32)
        writer.write_case(
            case_id, image, label.astype(np.uint8), attrs, np.zeros((0, 4)), (2, 2, 2)
        )
    return path


def test_nifti_predictions_against_a_store(folders, tmp_path: Path, capsys) -> None:
    pred_dir, _ = folders
    cases = brats_cases()
    gt_ids = {k: np.where(gt == 4, 3, gt) for k, (_, gt) in cases.items()}  # class ids
    store = write_store(tmp_path / "gt.zarr", gt_ids)
    assert main(["evaluate", str(pred_dir), str(store), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["label_mapping"] == {"0": 0, "1": 1, "2": 2, "4": 3}
    assert report["cases"]["c1"]["spacing"] == list(SPACING_ZYX)
    assert report["cases"]["c1"]["regions"]["whole_tumor"]["dice"] == pytest.approx(10 / 15)
    assert report["cases"]["c2"]["classes"]["edema"]["dice"] == 1.0
    pred_store = write_store(tmp_path / "pred.zarr", gt_ids)
    assert main(["evaluate", str(pred_store), str(store), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["classes"]["enhancing"]["dice"]["mean"] == 1.0
