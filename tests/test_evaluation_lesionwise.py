"""``--brats-lesionwise``: partseg's numbers equal the official BraTS evaluation package's.

The reference run is the package's own command line (``brats-evaluate`` then
``brats-parse-metrics seg``) on BraTS 2023 files (enhancing tumour = 3); partseg evaluates the
same cases from BraTS 2017-2021 files (enhancing tumour = 4, as partseg exports them), so the
label conventions are part of what is compared. Runs where the ``brats`` extra is installed;
without it only the error naming the pip command is tested.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from partseg.cli import main
from partseg.errors import ConfigError
from partseg.evaluation import evaluate_folders

SHAPE = (12, 20, 24)  # (Z, Y, X)
SPACING = (2.0, 1.0, 1.0)  # (Z, Y, X) mm: anisotropic, so a spacing mix-up shows
IDS = ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000")
#: The reference run's own warnings (panoptica's default NSD threshold, pandas' std of NaNs).
OFFICIAL_WARNINGS = [
    pytest.mark.filterwarnings("ignore:The threshold is set to 0.5"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


def _box(zyx: np.ndarray, start: tuple[int, int, int], size: int, value: int) -> None:
    z, y, x = start
    zyx[z : z + size, y : y + size, x : x + size] = value


def synthetic_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(prediction, ground truth) in BraTS 2023 labels (1 necrotic, 2 edema, 3 enhancing).

    Case 1: two enhancing lesions (one found, shifted; one missed), an edema halo, a false
    positive necrotic lesion. Case 2: enhancing tumour found, plus a false positive enhancing
    lesion far away. Case 3: no enhancing tumour in the ground truth, one predicted.
    """
    cases = {}
    for index, case_id in enumerate(IDS):
        gt, pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
        _box(gt, (2, 2, 2), 6, 2)
        _box(pred, (2, 3, 2), 6, 2)
        if index < 2:
            _box(gt, (3, 3, 3), 3, 3)
            _box(pred, (3, 4, 3), 3, 3)
        if index == 0:
            _box(gt, (4, 12, 14), 3, 3)  # missed
            _box(pred, (8, 14, 18), 2, 1)  # false positive necrotic
        if index == 1:
            _box(pred, (8, 14, 18), 3, 3)  # false positive enhancing
        if index == 2:
            _box(pred, (4, 4, 4), 2, 3)  # enhancing where the ground truth has edema
        cases[case_id] = pred, gt
    return cases


def save(path: Path, zyx: np.ndarray) -> None:
    affine = np.diag([*reversed(SPACING), 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(zyx.T), affine), str(path))


def to_2021(zyx: np.ndarray) -> np.ndarray:
    return np.where(zyx == 3, 4, zyx).astype(np.uint8)


def official_run(root: Path, cases: dict, missing: str | None = None) -> dict[str, dict]:
    """The package's own CLI: ``brats-evaluate --config gli`` and ``brats-parse-metrics seg``."""
    from brats_evaluation import evaluation, metrics_parser

    ref, pred = root / "official_ref", root / "official_pred"
    ref.mkdir()
    pred.mkdir()
    for case_id, (p, g) in cases.items():
        save(ref / f"{case_id}-seg.nii.gz", g)
        if case_id != missing:
            save(pred / f"{case_id}.nii.gz", p)
    summary, table = root / "summary.json", root / "table.csv"
    argv = ["brats-evaluate", "--config", "gli", "--ref_path", str(ref), "--pred_path",
            str(pred), "--summary_json", str(summary)]  # fmt: skip
    old = sys.argv
    try:
        sys.argv = argv
        evaluation.main()
        sys.argv = ["brats-parse-metrics", "seg", "--json_path", str(summary),
                    "--output_csv_path", str(table)]  # fmt: skip
        metrics_parser.main()
    finally:
        sys.argv = old
    with table.open(newline="") as handle:
        return {
            row.pop("subject_id").removesuffix("-seg.nii.gz"): row for row in csv.DictReader(handle)
        }


def partseg_folders(root: Path, cases: dict, missing: str | None = None) -> tuple[Path, Path]:
    """The same cases for partseg: BraTS 2017-2021 ``_seg`` labels and predictions (ET = 4)."""
    gt, pred = root / "gt", root / "pred"
    for case_id, (p, g) in cases.items():
        (gt / case_id).mkdir(parents=True)
        for channel in ("t1", "t1ce", "t2", "flair"):
            save(gt / case_id / f"{case_id}_{channel}.nii.gz", np.ones(SHAPE, np.int16))
        save(gt / case_id / f"{case_id}_seg.nii.gz", to_2021(g))
        pred.mkdir(exist_ok=True)
        if case_id != missing:
            save(pred / f"{case_id}.nii.gz", to_2021(p))
    return pred, gt


def same(ours: float, official: str) -> bool:
    expected = float(official) if official.strip() else math.nan
    if math.isnan(expected):
        return math.isnan(ours)
    return ours == pytest.approx(expected, rel=1e-9, abs=1e-12)


def compare(report: dict, official: dict[str, dict], case_ids: list[str]) -> int:
    """Every official column per case and region, and the mean/std/median rows; the count."""
    compared = 0
    for case_id in case_ids:
        for region, values in report["cases"][case_id]["lesionwise"].items():
            for column, value in values.items():
                assert same(value, official[case_id][f"{column}_{region}"]), (case_id, column)
                compared += 1
    for stat in ("mean", "std", "median"):
        for region, columns in report["summary"]["lesionwise"].items():
            for column, stats in columns.items():
                assert same(stats[stat], official[stat][f"{column}_{region}"]), (stat, column)
                compared += 1
    return compared


@OFFICIAL_WARNINGS[0]
@OFFICIAL_WARNINGS[1]
def test_partseg_equals_the_official_package_on_synthetic_cases(tmp_path: Path) -> None:
    pytest.importorskip("brats_evaluation")
    cases = synthetic_cases()
    official = official_run(tmp_path, cases)
    report = evaluate_folders(*partseg_folders(tmp_path, cases), brats_lesionwise="gli")
    assert report["brats_lesionwise"]["config"] == "gli"
    assert compare(report, official, list(IDS)) > 3 * 6 * 15  # 3 cases x 6 regions x 15 columns
    et = report["cases"][IDS[0]]["lesionwise"]["et"]
    assert (et["all_instance_tp"], et["all_instance_fn"]) == (1.0, 1.0)  # one found, one missed
    assert report["cases"][IDS[1]]["lesionwise"]["et"]["all_instance_fp"] == 1.0
    assert report["cases"][IDS[2]]["lesionwise"]["et"]["global_hd95"] == 373.0  # BraTS penalty


@OFFICIAL_WARNINGS[0]
@OFFICIAL_WARNINGS[1]
def test_a_missing_prediction_gets_the_official_penalty(tmp_path: Path) -> None:
    pytest.importorskip("brats_evaluation")
    cases = synthetic_cases()
    official = official_run(tmp_path, cases, missing=IDS[2])
    pred, gt = partseg_folders(tmp_path, cases, missing=IDS[2])
    report = evaluate_folders(pred, gt, allow_missing=True, warn=lambda _: None,
                              brats_lesionwise="gli")  # fmt: skip
    assert report["brats_lesionwise"]["missing_cases"] == [IDS[2]]
    compare(report, official, list(IDS[:2]))
    assert report["summary"]["lesionwise"]["et"]["lesionwise_hd95_mean"]["median"] != 0


def test_cli_table_and_json(tmp_path: Path, capsys) -> None:
    pytest.importorskip("brats_evaluation")
    pred, gt = partseg_folders(tmp_path, synthetic_cases())
    out = tmp_path / "m.json"
    argv = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--brats-lesionwise"]
    assert main([*argv, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "lesion-wise: the official BraTS evaluation, brats-evaluation 0.0." in table
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("lesion-wise "))
    assert lines[start].split() == ["lesion-wise", "wt", "tc", "et"]
    assert lines[-1].startswith("mean") and len(lines) - start == 2 + len(IDS) + 1
    report = json.loads(out.read_text())
    assert set(report["cases"][IDS[0]]["lesionwise"]) >= {"wt", "tc", "et"}


def test_brats_lesionwise_needs_brats_labels(tmp_path: Path) -> None:
    pytest.importorskip("brats_evaluation")
    gt = np.zeros(SHAPE, np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    save(tmp_path / "a_seg.nii.gz", gt)
    save(tmp_path / "a.nii.gz", gt)
    with pytest.raises(ConfigError, match=r"needs BraTS labels .*class_1"):
        evaluate_folders(tmp_path / "a.nii.gz", tmp_path / "a_seg.nii.gz", brats_lesionwise="gli")


def test_a_missing_extra_names_the_pip_command(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "brats_evaluation", None)  # import fails as if absent
    gt = to_2021(synthetic_cases()[IDS[0]][1])
    save(tmp_path / "a_seg.nii.gz", gt)
    save(tmp_path / "a.nii.gz", gt)
    with pytest.raises(ConfigError, match=r"pip install 'partseg\[brats\]'"):
        evaluate_folders(tmp_path / "a.nii.gz", tmp_path / "a_seg.nii.gz", brats_lesionwise="gli")
    argv = ["evaluate", str(tmp_path / "a.nii.gz"), str(tmp_path / "a_seg.nii.gz")]
    assert main([*argv, "--brats-lesionwise"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'partseg[brats]'" in err
