"""Evaluation across dataset layouts: discovery, label conventions, the order check, stores.

Tiny datasets in each layout ingest knows (BraTS 2017-2021 and 2023 with their scans, MSD /
nnU-Net raw, flat folders), scored against predictions in the same or another label convention.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_evaluation import SHAPE, save, write_store

from partseg.errors import InputError
from partseg.evaluation import evaluate_folders
from partseg.metrics import BRATS_CLASSES

CASES = ("c1", "c2")
EDITIONS = {  # name: (file separator, scan channels, enhancing-tumour value)
    "2021": ("_", ("t1", "t1ce", "t2", "flair"), 4),
    "2023": ("-", ("t1n", "t1c", "t2w", "t2f"), 3),
}


def labels(case: str, et: int) -> np.ndarray:
    """(Z, Y, X) BraTS labels: necrotic 1, edema 2, enhancing ``et``; c2 has no enhancing."""
    zyx = np.zeros(SHAPE, np.int16)
    zyx[0, 0, :2], zyx[1, 1, :] = 1, 2
    if case == "c1":
        zyx[3, 0, 1:4] = et
    return zyx


def prediction(case: str, et: int) -> np.ndarray:
    """The ground truth with one edema voxel missed: Dice of edema in c1 = 8/9."""
    zyx = labels(case, et)
    zyx[1, 1, 0] = 0
    return zyx


def brats_dataset(root: Path, edition: str, *, scans: bool = True) -> Path:
    """``root/<id>/<id><sep><channel>.nii.gz`` (+ seg) for every case."""
    sep, channels, et = EDITIONS[edition]
    for case in CASES:
        folder = root / case
        folder.mkdir(parents=True)
        for channel in channels if scans else ():
            save(folder / f"{case}{sep}{channel}.nii.gz", np.ones(SHAPE, np.int16))
        save(folder / f"{case}{sep}seg.nii.gz", labels(case, et))
    return root


def nnunet_dataset(root: Path, msd_style: bool = False) -> Path:
    """nnU-Net v2 raw (``{"background": 0, ...}``) or MSD (``{"0": "background"}``) labels."""
    names = ["background", "edema", "non-enhancing", "enhancing"]
    label_json = {str(i): n for i, n in enumerate(names)} if msd_style else {
        n: i for i, n in enumerate(names)
    }  # fmt: skip
    meta = {"channel_names": {"0": "T1"}, "labels": label_json, "file_ending": ".nii.gz"}
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps(meta))
    for case in CASES:
        save(root / "imagesTr" / f"{case}_0000.nii.gz", np.ones(SHAPE, np.int16))
        save(root / "labelsTr" / f"{case}.nii.gz", labels(case, 3))
    return root


def predictions(root: Path, et: int, suffix: str = "") -> Path:
    root.mkdir(parents=True)
    for case in CASES:
        save(root / f"{case}{suffix}.nii.gz", prediction(case, et))
    return root


def check_scores(report: dict) -> None:
    c1 = report["cases"]["c1"]
    assert c1["classes"]["enhancing"]["dice"] == 1.0
    assert c1["classes"]["edema"]["dice"] == pytest.approx(8 / 9)
    assert c1["regions"]["enhancing_tumor"]["dice"] == 1.0
    assert report["cases"]["c2"]["classes"]["enhancing"]["gt_voxels"] == 0


@pytest.mark.parametrize("edition", ["2021", "2023"])
def test_brats_datasets_as_ground_truth_in_their_own_labels(tmp_path: Path, edition: str) -> None:
    et = EDITIONS[edition][2]
    gt = brats_dataset(tmp_path / "gt", edition)
    report = evaluate_folders(predictions(tmp_path / "pred", et), gt)
    assert report["classes"] == list(BRATS_CLASSES)
    assert f"BraTS {edition if edition == '2023' else '2017-2021'}" in report["label_convention"]
    assert report["cases"]["c1"]["gt"].endswith(f"c1{EDITIONS[edition][0]}seg.nii.gz")
    check_scores(report)


@pytest.mark.parametrize(("gt_edition", "pred_et", "fix"), [("2023", 4, "4:3"), ("2021", 3, "3:3")])
def test_a_prediction_in_the_other_brats_labels_is_refused(
    tmp_path: Path, gt_edition: str, pred_et: int, fix: str
) -> None:
    gt = brats_dataset(tmp_path / "gt", gt_edition)
    pred = predictions(tmp_path / "pred", pred_et)
    with pytest.raises(InputError) as err:
        evaluate_folders(pred, gt)
    message = str(err.value)
    gt_set = "{0, 1, 2, 3}" if gt_edition == "2023" else "{0, 1, 2, 4}"
    assert f"values {{0, 1, 2, {pred_et}}}" in message and f"label set {gt_set}" in message
    assert "c1.nii.gz" in message and "seg.nii.gz" in message and "enhancing tumour" in message
    assert f"--pred-label-map 0=0 1=1 2=2 {fix.replace(':', '=')}" in message
    report = evaluate_folders(pred, gt, pred_labels_map=f"0:0,1:1,2:2,{fix}")
    check_scores(report)


@pytest.mark.parametrize(("gt_et", "pred_et"), [(4, 3), (3, 4)])
def test_flat_folders_without_a_layout_refuse_the_brats_mix_up(
    tmp_path: Path, gt_et: int, pred_et: int
) -> None:
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    for case in CASES:
        save(gt_dir / f"{case}.nii.gz", labels(case, gt_et))
    with pytest.raises(InputError, match=r"enhancing tumour is .*--pred-label-map 0=0 1=1 2=2"):
        evaluate_folders(predictions(tmp_path / "pred", pred_et), gt_dir)


def test_brats_2023_seg_files_alone_are_a_hint_the_values_confirm(tmp_path: Path) -> None:
    gt = brats_dataset(tmp_path / "gt", "2023", scans=False)
    report = evaluate_folders(predictions(tmp_path / "pred", 3), gt)
    assert report["classes"] == list(BRATS_CLASSES) and report["label_mapping"] == "identity"
    check_scores(report)
    with pytest.raises(InputError, match="outside it"):
        evaluate_folders(predictions(tmp_path / "p4", 4), gt)


@pytest.mark.parametrize("msd_style", [False, True])
@pytest.mark.parametrize("where", ["root", "labelsTr"])
def test_nnunet_and_msd_raw_datasets_use_their_dataset_json(
    tmp_path: Path, msd_style: bool, where: str
) -> None:
    root = nnunet_dataset(tmp_path / "raw", msd_style)
    gt = root if where == "root" else root / "labelsTr"
    report = evaluate_folders(predictions(tmp_path / "pred", 3), gt)
    assert report["classes"] == ["background", "edema", "non-enhancing", "enhancing"]
    assert "dataset.json" in report["label_convention"] and report["regions"] == {}
    assert report["cases"]["c1"]["classes"]["enhancing"]["dice"] == 1.0
    assert report["cases"]["c1"]["gt"] == str(root / "labelsTr" / "c1.nii.gz")
    with pytest.raises(InputError, match=r"label set \{0, 1, 2, 3\}.*dataset\.json"):
        evaluate_folders(predictions(tmp_path / "p4", 4), gt)


def test_swapped_sides_are_refused_and_named_sides_pass(tmp_path: Path) -> None:
    gt = brats_dataset(tmp_path / "gt", "2023")
    pred = predictions(tmp_path / "pred", 3)
    with pytest.raises(InputError, match=r"look swapped.*PRED .*gt looks like ground truth") as err:
        evaluate_folders(gt, pred)
    assert "nnUNetv2_evaluate_folder takes the ground truth first" in str(err.value)
    assert f"--pred {pred} --gt {gt}" in err.value.hint
    raw = nnunet_dataset(tmp_path / "raw")
    with pytest.raises(InputError, match="labelsTr folder of an MSD / nnU-Net raw dataset"):
        evaluate_folders(raw / "labelsTr", pred)  # nnU-Net's order: GT first
    (pred / ".partseg-predict.json").write_text("{}")
    with pytest.raises(InputError, match=r"GT .* looks like predictions \(partseg predict"):
        evaluate_folders(raw / "labelsTr", pred)
    check_scores(evaluate_folders(pred, gt))
    assert evaluate_folders(gt, gt)["summary"]["classes"]["edema"]["dice"]["mean"] == 1.0


def test_predictions_inside_the_dataset_and_probability_files(tmp_path: Path) -> None:
    gt = brats_dataset(tmp_path / "gt", "2021")
    for case in CASES:  # <id>/<id>_pred.nii.gz next to the scans and the seg
        save(gt / case / f"{case}_pred.nii.gz", prediction(case, 4))
    check_scores(evaluate_folders(gt, gt))  # PRED takes the _pred files, GT the _seg files
    pred = predictions(tmp_path / "pred", 4)
    save(pred / "c1_probabilities.nii.gz", np.zeros(SHAPE, np.int16))  # partseg predict's
    check_scores(evaluate_folders(pred, gt))


def test_a_raw_dataset_without_labels_is_no_ground_truth(tmp_path: Path) -> None:
    gt = brats_dataset(tmp_path / "gt", "2023")
    for case in CASES:
        (gt / case / f"{case}-seg.nii.gz").unlink()
    with pytest.raises(InputError, match="without label files"):
        evaluate_folders(predictions(tmp_path / "pred", 3), gt)


def test_store_ground_truth_scores_a_missed_class_with_the_original_diagonal(
    tmp_path: Path,
) -> None:
    gt = {c: np.where(labels(c, 4) == 4, 3, labels(c, 4)) for c in CASES}  # class ids
    attrs = {"original_shape": [155, 240, 240], "original_spacing": [1.0, 1.0, 1.0]}
    store = write_store(tmp_path / "gt.zarr", gt, attrs=attrs)
    pred = predictions(tmp_path / "pred", 4)
    missed = prediction("c1", 4)
    missed[missed == 4] = 0  # enhancing tumour missed
    save(pred / "c1.nii.gz", missed)
    report = evaluate_folders(pred, store)
    assert report["cases"]["c1"]["classes"]["enhancing"]["hd95"] == pytest.approx(373.13, abs=0.01)
    assert "store" in report["label_convention"]
    with pytest.raises(InputError, match=r"values \{0, 1, 2, 3\}.*label set \{0, 1, 2, 4\}"):
        evaluate_folders(predictions(tmp_path / "p3", 3), store)


def test_a_prediction_store_must_name_the_ground_truth_classes(tmp_path: Path) -> None:
    gt = brats_dataset(tmp_path / "gt", "2023")
    ids = {c: prediction(c, 3) for c in CASES}  # BraTS 2023 labels = partseg's class ids
    check_scores(evaluate_folders(write_store(tmp_path / "p.zarr", ids), gt))
    other = write_store(tmp_path / "o.zarr", ids, classes=("background", "a", "b", "c"))
    with pytest.raises(InputError, match="prediction store's classes"):
        evaluate_folders(other, gt)
