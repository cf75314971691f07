"""Tests of ``partseg evaluate``: files written, exit statuses, and seams end to end.

The metric values themselves are tested on the library in ``tests/test_evaluation.py``, whose
data helpers these tests share.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_evaluation import SHAPE, save, write_folders, write_store

from partseg.checkpoint import partition_to_dict, save_checkpoint
from partseg.cli import main
from partseg.dataset import InputLayout
from partseg.evaluation import csv_rows, evaluate_folders, to_csv
from partseg.geometry import make_partition
from partseg.models import ModelConfig, build_model


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return write_folders(tmp_path)


def test_folders_give_json_csv_and_table(folders, tmp_path: Path, capsys) -> None:
    pred_dir, gt_dir = folders
    out_json, out_csv = tmp_path / "out" / "m.json", tmp_path / "m.csv"
    argv = [str(pred_dir), str(gt_dir), "--json", str(out_json), "--csv", str(out_csv)]
    assert main(["evaluate", *argv]) == 0
    table = capsys.readouterr().out
    assert "whole_tumor" in table and table.splitlines()[-1].startswith("mean")

    report = json.loads(out_json.read_text())
    expected = evaluate_folders(str(pred_dir), str(gt_dir))
    assert report == json.loads(json.dumps(expected))
    assert report["cases"]["c1"]["classes"]["enhancing"]["dice"] == pytest.approx(10 / 15)
    assert out_csv.read_text() == to_csv(*csv_rows(expected["cases"], expected["summary"]))
    rows = list(csv.DictReader(out_csv.open()))
    by_key = {(r["case"], r["section"], r["target"]): r for r in rows}
    assert float(by_key["mean", "regions", "tumor_core"]["dice"]) == pytest.approx(5 / 6)
    assert len(rows) == 2 * 6 + 3 * 6  # 2 cases + mean/std/median, 3 classes + 3 regions
    assert not list(tmp_path.glob("**/*.tmp"))  # atomic writes leave no temporary file
    assert report["hd95_convention"] == "max_directed" and "max_directed" in table


def test_hd95_flag_picks_the_convention(folders, tmp_path: Path, capsys) -> None:
    pred_dir, gt_dir = folders
    out_json = tmp_path / "pooled.json"
    argv = ["evaluate", str(pred_dir), str(gt_dir), "--hd95", "pooled", "--json", str(out_json)]
    assert main(argv) == 0
    assert "pooled convention" in capsys.readouterr().out
    report = json.loads(out_json.read_text())
    assert report["hd95_convention"] == "pooled"
    assert report == json.loads(json.dumps(evaluate_folders(pred_dir, gt_dir, hd95="pooled")))
    with pytest.raises(SystemExit):
        main(["evaluate", str(pred_dir), str(gt_dir), "--hd95", "mean"])


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
    assert "partseg evaluate: warning: skipping" in capsys.readouterr().err
    report = json.loads(out_json.read_text())
    assert list(report["cases"]) == ["c1"] and report["skipped"] == ["c2", "c9"]


def test_labels_map_errors_exit_2(tmp_path: Path, capsys) -> None:
    gt = np.zeros(SHAPE, np.int16)
    gt[1, 1, 1] = 7
    argv = ["evaluate", str(save(tmp_path / "p.nii.gz", gt)), str(save(tmp_path / "g.nii.gz", gt))]
    assert main([*argv, "--label-map", "0=0", "1=1"]) == 2
    assert "[7]" in capsys.readouterr().err
    assert main([*argv, "--labels-map", "0:0,1:1"]) == 2  # the old spelling and syntax
    err = capsys.readouterr().err
    assert "[7]" in err and "--labels-map is deprecated; use --label-map" in err
    with pytest.raises(SystemExit) as stop:  # refused when the command line is parsed
        main([*argv, "--label-map", "0-0"])
    assert stop.value.code == 2
    assert "expected VALUE=ID pairs such as 0=0 1=1 2=2 4=3, got '0-0'" in capsys.readouterr().err
    assert main([*argv, "--label-map", "0=0", "7=1", "--json"]) == 0  # 7 -> class 1
    report = json.loads(capsys.readouterr().out)
    assert report["cases"]


# --------------------------------------------------------------------------------------------
# Seams end to end: partseg predict (zarr probabilities) -> partseg evaluate --seams
# --------------------------------------------------------------------------------------------

SEAM_SHAPE = (16, 16, 16)  # (Z, Y, X): 2 x 2 x 2 cores of 8


def seam_store(path: Path) -> Path:
    """One case, one channel, two classes: a smooth image and its thresholded label."""
    z, y, x = np.meshgrid(*(np.linspace(0, 3, n) for n in SEAM_SHAPE), indexing="ij")
    image = np.sin(2 * x + z) * np.cos(3 * y - z)  # (Z, Y, X)
    label = (image > 0.2).astype(np.uint8)
    return write_store(
        path,
        {"c1": label},
        {"c1": image[None].astype(np.float32)},  # (C=1, Z, Y, X)
        classes=("background", "foreground"),
        label_mapping=((0, 0), (1, 1)),
        chunks=(8, 8, 8),
    )


def tiny_checkpoint(path: Path) -> Path:
    """A no-norm 3D U-Net (receptive field 19, stride 2) trained on nothing: core 8, margin 2."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        name="unet", spatial_dims=3, in_channels=1, out_channels=2, depth=2, base_width=4,
        norm="none",
    )  # fmt: skip
    model = build_model(cfg).eval()
    partition = make_partition((8, 8, 8), 2, stride=model.total_stride)
    save_checkpoint(path, {
        "format": "partseg-checkpoint", "version": 1,
        "model_config": dataclasses.asdict(cfg), "model_state": model.state_dict(),
        "partition": partition_to_dict(partition),
        "layout": dataclasses.asdict(InputLayout(3)),
        "classes": ["background", "foreground"], "channels": ["t1"],
        "label_mapping": {"0": 0, "1": 1}, "config": {},
    })  # fmt: skip
    return path


def test_seams_of_exact_and_margin_zero_predictions(tmp_path: Path, capsys) -> None:
    store = str(seam_store(tmp_path / "s.zarr"))
    ckpt = str(tiny_checkpoint(tmp_path / "m.pt"))
    predict = ["predict", ckpt, "--store", store, "--save-probabilities"]
    predict += ["--probabilities-format", "zarr", "--device", "cpu"]
    runs = {
        "exact": ["--partition", "grid", "--margin", "exact"],
        "zero": ["--partition", "grid", "--margin", "0"],
        "layerwise": [],  # the default mode: the layer-wise engine
        "reference": ["--partition", "none"],
    }
    for name, options in runs.items():
        assert main([*predict, *options, "--out", str(tmp_path / name)]) == 0
    seams = {}
    for name in ("exact", "zero", "layerwise"):
        out = tmp_path / f"{name}.json"
        argv = ["evaluate", str(tmp_path / name), store, "--json", str(out)]
        argv += ["--seams", str(tmp_path / name), "--seam-reference", str(tmp_path / "reference")]
        assert main(argv) == 0
        assert "seam_index" in capsys.readouterr().out  # the table lists the seam measures
        report = json.loads(out.read_text())
        seams[name] = report["cases"]["c1"]["seam"]["probabilities"]
        summary = report["summary"]["seam"]["probabilities"]
        assert summary["seam_index"]["mean"] == pytest.approx(seams[name]["seam_index"])
    exact, zero = seams["exact"], seams["zero"]
    assert seams["layerwise"]["max_abs"] <= 1e-3  # equal to model(volume) up to float16 storage
    assert seams["layerwise"]["changed_label_share"] == 0
    # the reference is model(volume): on this 16^3 case every voxel is within half the
    # receptive field (19) of the border, where the grid's zero input differs slightly from
    # the reference's zero-padded features (docs/stitching.md), so only small errors remain
    assert exact["max_abs"] <= 1e-2
    assert exact["changed_label_share"] <= 1e-3
    assert zero["mean_abs"] > exact["mean_abs"]
    assert abs(zero["seam_index"] - 1) > abs(exact["seam_index"] - 1)


def test_seam_reference_without_seams_and_missing_files_exit_2(folders, tmp_path, capsys):
    pred_dir, gt_dir = folders
    (tmp_path / "probs").mkdir()
    argv = ["evaluate", str(pred_dir), str(gt_dir)]
    assert main([*argv, "--seam-reference", str(tmp_path / "probs")]) == 2
    assert "--seam-reference needs --seams" in capsys.readouterr().err
    assert main([*argv, "--seams", str(tmp_path / "probs")]) == 2
    err = capsys.readouterr().err
    assert "'c1'" in err and str(tmp_path / "probs" / "c1_probabilities.zarr") in err


@pytest.mark.parametrize("case", ["c1", "c2"])
def test_unexpected_prediction_label_is_a_clear_error(folders, capsys, case: str) -> None:
    """A 9 against BraTS ground truth {0, 1, 2, 4}, in the first case (identity so far) or a
    later one: an error naming case, file and values, not a score over 10 classes."""
    import nibabel as nib

    pred_dir, gt_dir = folders
    path = next(pred_dir.glob(f"{case}*.nii.gz"))
    image = nib.load(str(path))
    labels = np.asarray(image.dataobj).copy()
    labels.flat[0] = 9
    nib.save(nib.Nifti1Image(labels, image.affine), str(path))
    assert main(["evaluate", str(pred_dir), str(gt_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"partseg evaluate: error: case '{case}': ") and "\n" not in err
    assert "{9} outside it" in err and path.name in err and "label set {0, 1, 2, 4}" in err
    assert "--pred-label-map" in err


def test_json_under_a_file_is_one_line_and_exit_2(folders, tmp_path: Path, capsys) -> None:
    pred_dir, gt_dir = folders
    (tmp_path / "file").write_text("x")
    argv = ["evaluate", str(pred_dir), str(gt_dir), "--json-out", str(tmp_path / "file" / "m.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("partseg evaluate: error: cannot write ") and "\n" not in err
    assert "a file is in the way where a folder is needed" in err


def test_named_sides_equal_the_positional_form_and_mixing_is_refused(folders, capsys) -> None:
    pred_dir, gt_dir = folders
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json"]) == 0
    named = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(pred_dir), str(gt_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == named
    for argv in ([str(pred_dir), "--gt", str(gt_dir)], ["--pred", str(pred_dir)], [str(pred_dir)]):
        assert main(["evaluate", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("partseg evaluate: error: ") and "--pred PRED --gt GT" in err


def brats_2023(root: Path, pred_et: int) -> tuple[Path, Path]:
    """A BraTS 2023 dataset with its scans and predictions with enhancing tumour ``pred_et``."""
    from test_evaluation_layouts import brats_dataset, predictions

    return predictions(root / "pred", pred_et), brats_dataset(root / "gt", "2023")


def test_swapped_order_exits_2_with_the_named_command(tmp_path: Path, capsys) -> None:
    pred, gt = brats_2023(tmp_path, 3)
    assert main(["evaluate", str(gt), str(pred)]) == 2
    err = capsys.readouterr().err.strip()
    assert "look swapped" in err and "nnUNetv2_evaluate_folder" in err and "\n" not in err
    assert err.endswith(f"partseg evaluate --pred {pred} --gt {gt}")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("labels: the BraTS 2023 layout of") and "enhancing_tumor" in out


def test_pred_labels_map_option(tmp_path: Path, capsys) -> None:
    pred, gt = brats_2023(tmp_path, 4)
    assert main(["evaluate", str(pred), str(gt)]) == 2
    assert "--pred-label-map 0=0 1=1 2=2 4=3" in capsys.readouterr().err
    argv = ["evaluate", str(pred), str(gt), "--pred-label-map", "0=0", "1=1", "2=2", "4=3"]
    argv += ["--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cases"]["c1"]["classes"]["enhancing"]["dice"] == 1.0
