"""Tests of partseg.report: aggregation over folds, the three table files and the PNG plots."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from partseg.errors import ConfigError
from partseg.report import (
    RunResult,
    aggregate_costs,
    aggregate_scores,
    fmt,
    headline_table,
    mean_std,
    plot_class_distribution,
    plot_confusion_matrices,
    plot_loss_curves,
    plot_overlays,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _runs() -> list[RunResult]:
    """Two variants; "3d" has two folds with different Dice, "2d" one fold."""
    history = ({"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.5, "val_loss": 0.6})
    return [
        RunResult(
            "3d",
            0,
            {"edema": {"dice": 0.6, "hd95": 3.0}, "WT": {"dice": 0.9}},
            {"parameters": 100, "epoch_seconds": 2.0, "seam_index": 0.0},
            confusion=((5, 1), (2, 7)),
            history=history,
        ),
        RunResult(
            "3d",
            1,
            {"edema": {"dice": 0.8, "hd95": float("nan")}, "WT": {"dice": 0.7}},
            {"parameters": 100, "epoch_seconds": 4.0, "seam_index": 0.0},
        ),
        RunResult("2d", 0, {"edema": {"dice": 0.5, "hd95": 1.0}}, {"parameters": 50}),
    ]


def test_mean_std_ignores_missing_and_nan() -> None:
    assert mean_std([]) == (None, None)
    assert mean_std([None, float("nan")]) == (None, None)
    mean, std = mean_std([2.0, 4.0, 6.0])
    assert mean == 4.0
    assert std == pytest.approx(2.0)


def test_aggregate_scores_mean_and_spread_over_folds() -> None:
    rows = {(r["variant"], r["target"]): r for r in aggregate_scores(_runs())}
    assert set(rows) == {("3d", "edema"), ("3d", "WT"), ("2d", "edema")}
    edema = rows[("3d", "edema")]
    assert edema["folds"] == 2
    assert edema["dice"] == pytest.approx(0.7)
    assert edema["dice_std"] == pytest.approx(math.sqrt(0.02))
    assert edema["hd95"] == 3.0  # the NaN fold (no lesion) is left out
    assert edema["hd95_std"] is None
    assert rows[("2d", "edema")]["dice_std"] is None


def test_aggregate_costs_per_variant() -> None:
    rows = {r["variant"]: r for r in aggregate_costs(_runs())}
    assert rows["3d"]["epoch_seconds"] == pytest.approx(3.0)
    assert rows["3d"]["parameters"] == 100
    assert rows["2d"]["parameters"] == 50
    assert "epoch_seconds" not in rows["2d"]


def test_fmt_and_headline_table() -> None:
    assert fmt(0.5) == "0.500"
    assert fmt(float("nan")) == "-"
    table = headline_table(_runs()).splitlines()
    assert table[0] == "| variant | edema | WT |"
    assert table[2].startswith("| 3d | 0.700 ± 0.141 | 0.800 ± 0.141")
    assert table[3] == "| 2d | 0.500 | - |"


def test_write_report_files_round_trip(tmp_path) -> None:
    runs = _runs()
    out = write_report(
        tmp_path / "rep",
        runs,
        title="T",
        settings={"store": "s.zarr"},
        figures={"losses": "loss_curves.png"},
        notes=["a note"],
    )
    md = (out / "report.md").read_text()
    assert md.startswith("# T")
    assert "**store**: s.zarr" in md
    assert "![losses](loss_curves.png)" in md
    assert "a note" in md
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    first = rows[0]
    assert (first["variant"], first["target"]) == ("3d", "edema")
    assert float(first["dice"]) == pytest.approx(0.7)
    assert float(first["epoch_seconds"]) == pytest.approx(3.0)
    data = json.loads((out / "results.json").read_text())
    assert data["variants"] == ["3d", "2d"]
    restored = [RunResult.from_dict(r) for r in data["runs"]]
    assert restored[0].confusion == ((5, 1), (2, 7))
    assert restored[0].history[1]["val_loss"] == 0.6
    assert restored[2].scores == runs[2].scores
    assert data["hd95_convention"] == "max_directed"  # the default, stated in both files
    assert "HD95 convention: max_directed: max of the two directed 95th percentiles" in md


def test_report_states_the_hd95_convention_it_is_given(tmp_path) -> None:
    out = write_report(tmp_path / "rep", _runs(), hd95_convention="pooled")
    assert json.loads((out / "results.json").read_text())["hd95_convention"] == "pooled"
    assert (
        "HD95 convention: pooled: 95th percentile of both directions"
        in (out / "report.md").read_text()
    )
    with pytest.raises(ConfigError, match="hd95_convention='medpy'"):
        write_report(tmp_path / "bad", _runs(), hd95_convention="medpy")
    assert not list(out.glob(".*tmp"))


def test_plots_write_png(tmp_path) -> None:
    runs = _runs()
    classes = ("background", "edema", "core")
    paths = [
        plot_loss_curves({"3d": [list(runs[0].history), []]}, tmp_path / "loss.png"),
        plot_class_distribution(
            {"train": [1000, 10, 0], "test": [900, 20, 3]}, classes, tmp_path / "dist.png"
        ),
        plot_confusion_matrices(
            {"3d": np.array([[5, 1, 0], [0, 3, 1], [0, 0, 0]]), "2d": np.eye(3)},
            classes,
            tmp_path / "cm.png",
        ),
        plot_overlays(
            [np.arange(64, dtype=np.float32).reshape(8, 8)] * 2,
            {"ground truth": [np.eye(8, dtype=np.uint8)] * 2, "3d": [2 * np.eye(8)] * 2},
            classes,
            tmp_path / "overlay.png",
            row_titles=["a", "b"],
        ),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size > 1000
