"""tools/bench_learning.py: the learning benchmark's pipeline end to end at --quick size, and its
resume."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_learning.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_learning", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_learning"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_learning"]


def test_low_spacing_is_twice_the_phantom_voxel(bench) -> None:
    assert bench.low_spacing((155, 240, 240)) == (2.0, 2.0, 2.0)
    assert bench.low_spacing((78, 120, 120)) == (3.974, 4.0, 4.0)


def test_a_cross_validated_comparison_has_its_own_folder(bench) -> None:
    work = Path("w")
    assert bench.compare_dir(work, "cpu_lowres", 0) == work / "compare_cpu_lowres"
    assert bench.compare_dir(work, "cpu_lowres", 3) == work / "compare_cpu_lowres_folds3"


def test_quick_benchmark_writes_the_summary_and_resumes(bench, tmp_path: Path, capsys) -> None:
    out, work = tmp_path / "bench.json", tmp_path / "work"
    args = ["--quick", "--compares", "cpu_lowres", "--budget", "1s", "--work", str(work)]
    assert bench.main([*args, "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["quick"] and summary["budget"] == "1s"
    assert summary["data"]["test_cases"] == ["Phantom_005", "Phantom_006"]
    # one of the 4 training cases validates, the other 3 train
    assert summary["data"]["split"] == {"cpu_lowres": "1 fold(s); 3 training / 1 validation "
                                                      "cases per fold"}  # fmt: skip
    assert list(summary["variants"]) == ["3d_context_2mm"]
    variant = summary["variants"]["3d_context_2mm"]
    assert set(variant["dice"]) == {"WT", "TC", "ET"}
    for region in variant["dice"].values():
        assert 0.0 <= region["mean"] <= 1.0
        assert sorted(region["per_case"]) == ["Phantom_005", "Phantom_006"]
    assert variant["budget_seconds"] == 1.0 and variant["steps"] >= 1
    assert variant["step_seconds"] > 0 and "cores" in summary["hardware"]
    assert set(summary["targets"]["best_cpu_recipe_met"]) == {"WT>=0.8", "TC>=0.6", "ET>=0.55"}
    assert summary["commands"][0].startswith("partseg phantom")
    capsys.readouterr()
    assert variant["hardware"] == summary["hardware"]
    labels = summary["data"]["test_label_voxels"]
    assert sorted(labels) == ["Phantom_005", "Phantom_006"]
    # the store's classes (BraTS label 4 is class 3) inside the case's crop of the head
    assert set(labels["Phantom_005"]) == {"0", "1", "2", "3"}
    assert 0 < sum(labels["Phantom_005"].values()) <= 24 * 40 * 40
    assert labels["Phantom_005"] != labels["Phantom_006"]
    # rerun: resumes; merged with the first summary it carries nothing (it made every variant)
    again_args = [*args, "--out", str(tmp_path / "again.json"), "--merge", str(out)]
    assert bench.main(again_args) == 0
    printed = capsys.readouterr().out
    assert "not retrained" in printed and "0 already present" not in printed
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["variants"] == summary["variants"]
    assert again["merged"]["variants"] == [] and again["merged"]["labels_checked"]


def _summary(variants: dict, budget: str = "60m", labels: dict | None = None) -> dict:
    data = {"train_cases": 3, "test_cases": ["c1", "c2"], "shape": [8, 8, 8], "seed": 1,
            "test_label_voxels": labels or {"c1": {"0": 500, "1": 12}}}  # fmt: skip
    return {"quick": False, "budget": budget, "folds": 0, "data": data, "hardware": "cpu A",
            "commands": [budget], "variants": variants}  # fmt: skip


def _variant(compare: str, wt: dict[str, float]) -> dict:
    return {"compare": compare, "dice": {"WT": {"mean": sum(wt.values()) / len(wt),
                                                "per_case": wt}}}  # fmt: skip


def test_merge_carries_the_earlier_variants_and_pairs_them_with_the_new_ones(bench) -> None:
    earlier = _summary({"2d": _variant("brats_comparison", {"c1": 0.4, "c2": 0.5}),
                        "3d": _variant("brats_comparison", {"c1": 0.1, "c2": 0.2})})  # fmt: skip
    now = _summary(
        {
            "3d": _variant("brats_comparison", {"c1": 0.7, "c2": 0.9}),
            "3d_context_2mm": _variant("cpu_lowres", {"c1": 0.8, "c2": 0.9}),
        }
    )
    merged = bench.merge(earlier, now, Path("old.json"))
    # the new run's 3d replaces the earlier one; the comparison's variants come first
    assert list(merged["variants"]) == ["2d", "3d", "3d_context_2mm"]
    assert merged["variants"]["3d"]["dice"]["WT"]["per_case"] == {"c1": 0.7, "c2": 0.9}
    assert merged["variants"]["2d"]["hardware"] == "cpu A"  # the earlier summary's machine
    pairs = {(t["a"], t["b"]): t for t in merged["paired_tests"]}
    assert set(pairs) == {("2d", "3d"), ("2d", "3d_context_2mm"), ("3d", "3d_context_2mm")}
    assert pairs[("2d", "3d")]["n"] == 2 and pairs[("2d", "3d")]["target"] == "WT"
    assert pairs[("2d", "3d")]["median_diff"] == pytest.approx(-0.35)
    assert merged["targets"]["brats_comparison_met"] == {"2d": False, "3d": True}
    assert merged["targets"]["best_cpu_recipe"] == "3d_context_2mm"
    assert merged["commands"] == ["60m", "60m"] and merged["merged"]["variants"] == ["2d"]


@pytest.mark.parametrize(
    ("budget", "labels", "named"),
    [("30m", None, "budget"), ("60m", {"c1": {"0": 480, "1": 32}}, "labels of c1")],
)
def test_merge_refuses_a_summary_of_other_data_or_budget(bench, budget, labels, named) -> None:
    earlier = _summary({"2d": _variant("brats_comparison", {"c1": 0.4})})
    now = _summary({"3d": _variant("brats_comparison", {"c1": 0.7})}, budget, labels)
    with pytest.raises(SystemExit, match=named):
        bench.merge(earlier, now, Path("old.json"))


def test_quick_cross_validated_benchmark_scores_every_training_case_out_of_fold(
    bench, tmp_path: Path
) -> None:
    out, work = tmp_path / "bench.json", tmp_path / "work"
    args = ["--quick", "--compares", "cpu_lowres", "--budget", "1s", "--folds", "2"]
    assert bench.main([*args, "--work", str(work), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert (work / "compare_cpu_lowres_folds2" / "report" / "results.json").is_file()
    variant = summary["variants"]["3d_context_2mm"]
    assert variant["dice"]["WT"]["folds"] == 2
    unseen = variant["out_of_fold_dice"]["WT"]
    assert unseen["n"] == 4 and sorted(unseen["per_case"]) == [
        f"Phantom_00{i}" for i in range(1, 5)
    ]
    assert summary["paired_tests_out_of_fold"] == []  # one variant: nothing to pair


@pytest.mark.slow
def test_quick_benchmark_of_every_comparison(bench, tmp_path: Path) -> None:
    """All comparisons at --quick size (about 2-3 minutes on 2 cores): the BraTS comparison, the
    low-res recipe and the cascade's second stage on its prior."""
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert list(summary["variants"]) == ["2d", "3d", "3d_context", "3d_context_2mm",
                                         "3d_cascade_fullres"]  # fmt: skip
    assert "prior.run=" in summary["commands"][-1]
    wt = [t for t in summary["paired_tests"] if t["target"] == "WT"]
    assert len(wt) == 10 and all(t["n"] == 2 for t in wt)  # 5 variants: 10 pairs
    assert set(summary["targets"]["brats_comparison_met"]) == {"2d", "3d", "3d_context"}
