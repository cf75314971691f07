"""tools/bench_learning.py: the learning benchmark's pipeline end to end at --quick size, and its
resume."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "bench_learning.py"
COMMITTED = ROOT / "docs" / "benchmarks" / "bench_learning_cpu.json"


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
    scoring = summary["runs"][0]["scoring"]  # how the recipe scores: seam-free, head only
    assert scoring["partition"] == "exact" and scoring["nonzero_mask"] is True
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
    assert again["merged"][0]["runs"] == [] and again["merged"][0]["labels_checked"]


def _summary(records: list, budget: str = "60m", labels: dict | None = None, folds=0) -> dict:
    data = {"train_cases": 3, "test_cases": ["c1", "c2"], "shape": [8, 8, 8], "seed": 1,
            "test_label_voxels": labels or {"c1": {"0": 500, "1": 12}}}  # fmt: skip
    return {"quick": False, "budget": budget, "folds": folds, "data": data, "hardware": "cpu A",
            "commands": [budget], "runs": records}  # fmt: skip


def _run(variant: str, compare: str, wt: dict[str, float], fold: int = 0, hw="cpu A") -> dict:
    return {"variant": variant, "fold": fold, "compare": compare, "hardware": hw,
            "scores": {"WT": {"dice": sum(wt.values()) / len(wt)}}, "costs": {"steps": 10.0},
            "cases": {c: {"WT": {"dice": d}} for c, d in wt.items()}}  # fmt: skip


def test_merge_carries_the_earlier_runs_and_pairs_them_with_the_new_ones(bench) -> None:
    earlier = _summary([_run("2d", "brats_comparison", {"c1": 0.4, "c2": 0.5}),
                        _run("3d", "brats_comparison", {"c1": 0.1, "c2": 0.2})])  # fmt: skip
    now = _summary(
        [
            _run("3d", "brats_comparison", {"c1": 0.7, "c2": 0.9}, hw="cpu B"),
            _run("3d_context_2mm", "cpu_lowres", {"c1": 0.8, "c2": 0.9}, hw="cpu B"),
        ]
    )
    merged = bench.merge(earlier, now, Path("old.json"))
    # the new run's 3d replaces the earlier one; the comparison's variants come first
    assert list(merged["variants"]) == ["2d", "3d", "3d_context_2mm"]
    assert merged["variants"]["3d"]["dice"]["WT"]["per_case"] == {"c1": 0.7, "c2": 0.9}
    assert merged["variants"]["2d"]["hardware"] == "cpu A"  # the earlier summary's machine
    assert merged["variants"]["3d"]["hardware"] == "cpu B"
    pairs = {(t["a"], t["b"]): t for t in merged["paired_tests"]}
    assert set(pairs) == {("2d", "3d"), ("2d", "3d_context_2mm"), ("3d", "3d_context_2mm")}
    assert pairs[("2d", "3d")]["n"] == 2 and pairs[("2d", "3d")]["target"] == "WT"
    assert pairs[("2d", "3d")]["median_diff"] == pytest.approx(-0.35)
    assert merged["targets"]["brats_comparison_met"] == {"2d": False, "3d": True}
    assert merged["targets"]["best_cpu_recipe"] == "3d_context_2mm"
    assert merged["commands"] == ["60m", "60m"] and merged["merged"][0]["runs"] == ["2d fold 0"]


def test_merge_of_several_summaries_lets_the_later_win_and_keeps_the_working_wall_time(
    bench,
) -> None:
    first = {**_summary([_run("2d", "brats_comparison", {"c1": 0.1})]),
             "wall_seconds": {"brats_comparison_s": 7000.0}}  # fmt: skip
    second = {**_summary([_run("2d", "brats_comparison", {"c1": 0.9}),
                          _run("3d", "brats_comparison", {"c1": 0.8})]),
              "wall_seconds": {"brats_comparison_s": 7100.0}}  # fmt: skip
    now = {**_summary([_run("3d", "brats_comparison", {"c1": 0.7})]),
           "wall_seconds": {"brats_comparison_s": 30.0}}  # a resume: seconds  # fmt: skip
    merged = bench.merge(first, bench.merge(second, now, Path("2.json")), Path("1.json"))
    assert merged["variants"]["2d"]["dice"]["WT"]["per_case"] == {"c1": 0.9}  # the later
    assert merged["variants"]["3d"]["dice"]["WT"]["per_case"] == {"c1": 0.7}  # this run's
    assert merged["wall_seconds"] == {"brats_comparison_s": 7100.0}
    assert [m["runs"] for m in merged["merged"]] == [["2d fold 0"], []]


def test_merge_joins_the_folds_of_a_variant_run_in_two_sittings(bench) -> None:
    earlier = _summary([_run("3d", "brats_comparison", {"c1": 0.4, "c2": 0.6})], folds=2)
    now = _summary([_run("3d", "brats_comparison", {"c1": 0.8, "c2": 1.0}, fold=1)], folds=2)
    merged = bench.merge(earlier, now, Path("old.json"))
    wt = merged["variants"]["3d"]["dice"]["WT"]
    assert wt["folds"] == 2 and wt["mean"] == pytest.approx(0.7)
    assert wt["sd"] == pytest.approx(np.std([0.5, 0.9], ddof=1))
    assert wt["per_case"] == pytest.approx({"c1": 0.6, "c2": 0.8})  # the mean over folds
    assert [(r["variant"], r["fold"]) for r in merged["runs"]] == [("3d", 0), ("3d", 1)]
    # a third sitting merges the joined summary: the history of both earlier sittings stays
    third = _summary([_run("3d", "brats_comparison", {"c1": 0.9, "c2": 0.9}, fold=2)], folds=3)
    joined = bench.merge({**merged, "folds": 3}, third, Path("joined.json"))
    assert [m["runs"] for m in joined["merged"]] == [["3d fold 0"], ["3d fold 0", "3d fold 1"]]
    assert joined["variants"]["3d"]["dice"]["WT"]["folds"] == 3


def test_merge_reads_the_committed_summary(bench) -> None:
    """docs/benchmarks/bench_learning_cpu.json merges with a run of the comparison, also in its
    form written before runs were kept (per-case Dice per variant only)."""
    earlier = json.loads(COMMITTED.read_text())
    now = {**{k: v for k, v in earlier.items() if k not in ("runs", "merged")}, "commands": [],
           "runs": [_run("new", "brats_comparison", {"Phantom_012": 0.9})]}  # fmt: skip
    merged = bench.merge(earlier, now, COMMITTED)
    for name, entry in earlier["variants"].items():
        assert merged["variants"][name]["dice"]["WT"]["mean"] == pytest.approx(
            entry["dice"]["WT"]["mean"]
        )
        assert merged["variants"][name]["dice"]["ET"]["per_case"] == pytest.approx(
            entry["dice"]["ET"]["per_case"]
        )
        assert merged["variants"][name]["steps"] == entry["steps"]
    assert merged["variants"]["new"]["dice"]["WT"]["per_case"] == {"Phantom_012": 0.9}
    assert merged["targets"]["best_cpu_recipe"] == earlier["targets"]["best_cpu_recipe"]


@pytest.mark.parametrize(
    ("budget", "labels", "named"),
    [("30m", None, "budget"), ("60m", {"c1": {"0": 480, "1": 32}}, "labels of c1")],
)
def test_merge_refuses_a_summary_of_other_data_or_budget(bench, budget, labels, named) -> None:
    earlier = _summary([_run("2d", "brats_comparison", {"c1": 0.4})])
    now = _summary([_run("3d", "brats_comparison", {"c1": 0.7})], budget, labels)
    with pytest.raises(SystemExit, match=named):
        bench.merge(earlier, now, Path("old.json"))


def test_merge_refuses_runs_of_one_comparison_scored_differently(bench) -> None:
    def run(variant: str, masked: bool | None, compare: str = "brats_comparison") -> dict:
        scoring = {} if masked is None else {"partition": "exact", "nonzero_mask": masked}
        return {**_run(variant, compare, {"c1": 0.5}), "scoring": scoring}

    earlier = _summary([run("2d", False), run("3d_context_2mm", True, "cpu_lowres")])
    with pytest.raises(SystemExit, match=r"brats_comparison runs were scored differently.*2d "):
        bench.merge(earlier, _summary([run("3d", True)]), Path("old.json"))
    merged = bench.merge(earlier, _summary([run("2d", True), run("3d", True)]), Path("old.json"))
    assert [r["scoring"]["nonzero_mask"] for r in merged["runs"]] == [True, True, True]
    unknown = _summary([run("2d", None)])  # written before runs recorded their scoring
    assert len(bench.merge(unknown, _summary([run("3d", True)]), Path("old.json"))["runs"]) == 2


def test_quick_cross_validated_benchmark_one_fold_per_sitting(bench, tmp_path: Path) -> None:
    """Fold 1, then fold 0 in a fresh work folder (a sitting's folder does not survive) merged
    with the first summary: the folds' spread and every training case scored out of fold."""
    args = ["--quick", "--compares", "cpu_lowres", "--budget", "1s", "--folds", "2"]
    first, out = tmp_path / "fold1.json", tmp_path / "bench.json"
    assert (
        bench.main([*args, "--fold", "1", "--work", str(tmp_path / "w1"), "--out", str(first)]) == 0
    )
    assert (tmp_path / "w1" / "compare_cpu_lowres_folds2" / "report" / "results.json").is_file()
    assert json.loads(first.read_text())["variants"]["3d_context_2mm"]["dice"]["WT"]["folds"] == 1
    merge = ["--merge", str(first), "--out", str(out)]
    assert bench.main([*args, "--fold", "0", "--work", str(tmp_path / "w0"), *merge]) == 0
    summary = json.loads(out.read_text())
    variant = summary["variants"]["3d_context_2mm"]
    assert variant["dice"]["WT"]["folds"] == 2 and variant["dice"]["WT"]["sd"] is not None
    unseen = variant["out_of_fold_dice"]["WT"]
    assert unseen["n"] == 4 and sorted(unseen["per_case"]) == [
        f"Phantom_00{i}" for i in range(1, 5)
    ]
    assert summary["paired_tests_out_of_fold"] == []  # one variant: nothing to pair
    assert summary["merged"][0]["runs"] == ["3d_context_2mm fold 1"]


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
