"""Benchmark what the recipes learn on realistic phantoms within a wall-time budget (issue 15).

Steps (each resumable: a rerun with the same arguments continues where the last one stopped):

1. ``partseg phantom --kind brats``: ``--train-cases`` + ``--test-cases`` realistic BraTS-like
   cases (MNI152 anatomy, glioma with necrotic core, enhancing rim and edema) of ``--shape``
   (default 155 x 240 x 240, BraTS).
2. ``partseg ingest``: the cases at full resolution (``full.zarr``) and resampled to 2 mm
   (``low.zarr``, ``--spacing 2 2 2``) for the low-resolution recipe.
3. ``partseg compare`` with ``--budget`` per variant (and ``--folds K``, into
   ``compare_<name>_folds<K>``: the single split and the cross-validation share the work
   folder's phantoms and stores): the BraTS comparison
   (``configs/compare_brats.yaml``: 2D, 3D, 3D+context) on the full-resolution store; the CPU
   recipe ``configs/brats_cpu_lowres.yaml`` on the 2 mm store, scored on the full-resolution
   store (predictions resampled back, nearest); and the cascade's second stage
   ``configs/brats_cpu_cascade.yaml`` at full resolution on the image plus the 2 mm run's
   (fold 0) prediction (it trains for one more budget: the cascade costs two). The last
   ``--test-cases`` cases are held out in every comparison. One of the ``--train-cases``
   validates (``base.data.val_fraction=1/train-cases``), the others train; validation (not
   counted by the budget, at most 5 times per run) predicts that one case: a 1 mm case takes
   minutes on a CPU.
4. A JSON summary (printed, and written to ``--out``): held-out Dice per region (WT, TC, ET)
   and variant as mean ± sd over folds with the per-case values, paired Wilcoxon tests between
   every two variants over the held-out cases (with ``--folds``: also out-of-fold Dice, every
   training case scored once by the fold that did not train on it, and the paired tests over
   those cases), the budget, steps done and measured step time
   per variant, the hardware, the wall time of each stage, and the issue's targets (best CPU
   recipe WT >= 0.80, TC >= 0.60, ET >= 0.55; every BraTS-comparison variant WT >= 0.5).

The full run takes hours on a CPU: five variants of one budget each, plus per run the step-time
probe, at most 5 validations and the scoring of the held-out cases (about 6.5 h for a 60-minute
budget on 2 cores, about 19 h with ``--folds 3``); run it on a quiet machine, niced if it must
share one. Where no sitting is that long, run some variants or folds at a time (``--compares``,
``--comparison-variants``, ``--fold``) and ``--merge`` the earlier summary: its runs are carried
over with their per-case Dice (refused unless data, budget and folds agree and the held-out
labels match), and mean ± sd, paired tests and targets are recomputed over all. ``--quick``
runs the same pipeline at tiny sizes with a seconds-long budget (the recipes' ``quick:``
models), as the test suite does.

Usage:
    python tools/bench_learning.py --out docs/benchmarks/bench_learning_cpu.json --budget 60m
    python tools/bench_learning.py --compares brats_comparison --comparison-variants 3d \
        --merge docs/benchmarks/bench_learning_cpu.json \
        --out docs/benchmarks/bench_learning_cpu.json
    python tools/bench_learning.py --out bench.json --budget 60m --folds 3 --work bench_work
    python tools/bench_learning.py --quick --out /tmp/bench_quick.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: BraTS evaluation regions -> the store's region names.
REGIONS = {"WT": "whole_tumor", "TC": "tumor_core", "ET": "enhancing_tumor"}
#: The comparisons run: name -> (recipe, store, variants or None for all).
COMPARES = {
    "brats_comparison": ("compare_brats", "full", ("2d", "3d", "3d_context")),
    "cpu_lowres": ("brats_cpu_lowres", "low", None),
    "cpu_cascade": ("brats_cpu_cascade", "full", None),
}
#: The cascade's first stage: the low-res comparison's run (fold 0) of this variant.
LOWRES_RUN = ("cpu_lowres", "3d_context_2mm")
#: The issue's targets: the best CPU recipe, and every variant of the BraTS comparison.
CPU_TARGETS = {"WT": 0.80, "TC": 0.60, "ET": 0.55}
COMPARISON_TARGET = {"WT": 0.5}
BRATS_FOV_MM = (155.0, 240.0, 240.0)  # a realistic phantom of any grid holds this field of view
QUICK = {"shape": (24, 40, 40), "train_cases": 4, "test_cases": 2, "budget": "2s"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the JSON summary goes")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="working folder for phantoms, stores and comparisons; rerun with the same one to "
        "resume (default: bench_learning_work, or bench_learning_quick with --quick)",
    )
    parser.add_argument("--budget", default="60m", help="training budget per variant and fold "
                        "(default: 60m; 2s with --quick)")  # fmt: skip
    parser.add_argument("--folds", type=int, default=0, help="cross-validation folds of each "
                        "variant, 0 for one train/validation split (default: 0)")  # fmt: skip
    parser.add_argument(
        "--train-cases",
        type=int,
        default=11,
        help="cases for training and validation (default: 11: 10 train, 1 validates)",
    )
    parser.add_argument("--test-cases", type=int, default=3, help="held out (default: 3)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="phantom grid (default: 155 240 240)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=15, help="phantom seed (default: 15)")
    parser.add_argument(
        "--compares",
        default=",".join(COMPARES),
        help=f"comparisons to run, comma-separated (default: {','.join(COMPARES)})",
    )
    parser.add_argument(
        "--comparison-variants",
        default=",".join(COMPARES["brats_comparison"][2]),
        help="the BraTS comparison's variants to run, comma-separated: a session too short for "
        "all of them runs some, a later one the rest with --merge (default: %(default)s)",
    )
    parser.add_argument(
        "--fold",
        default=None,
        metavar="K[,K]",
        help="with --folds: run only these folds (passed to `compare --fold`), the others in "
        "another sitting, joined with --merge (default: every fold)",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="an earlier summary of this benchmark (same data, budget and folds): its runs "
        "(variant and fold) that this run does not redo are carried over, with their per-case "
        "Dice, and every figure recomputed over all; repeat to merge several, later ones "
        "winning (default: none)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds of budget")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if key != "budget" and getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
        if args.budget == parser.get_default("budget"):
            args.budget = QUICK["budget"]
    args.shape = tuple(args.shape or (QUICK["shape"] if args.quick else (155, 240, 240)))
    if args.work is None:
        args.work = Path("bench_learning_quick" if args.quick else "bench_learning_work")
    unknown = [c for c in args.compares.split(",") if c not in COMPARES]
    if unknown:
        parser.error(f"unknown --compares {unknown}; choose from {', '.join(COMPARES)}")
    known = COMPARES["brats_comparison"][2]
    unknown = [v for v in args.comparison_variants.split(",") if v not in known]
    if unknown:
        parser.error(f"unknown --comparison-variants {unknown}; choose from {', '.join(known)}")
    if args.fold is not None and not args.folds:
        parser.error("--fold selects folds of --folds K")
    return args


def low_spacing(shape: Sequence[int]) -> tuple[float, ...]:
    """The low-resolution spacing: 2 mm at BraTS size, twice the phantom's voxel otherwise.

    Example:
        >>> low_spacing((155, 240, 240)), low_spacing((24, 40, 40))
        ((2.0, 2.0, 2.0), (12.917, 12.0, 12.0))
    """
    if tuple(shape) == (155, 240, 240):
        return (2.0, 2.0, 2.0)
    return tuple(round(2 * fov / n, 3) for fov, n in zip(BRATS_FOV_MM, shape, strict=True))


def partseg(argv: Sequence[str], log: list[str]) -> None:
    """Run one ``partseg`` command in this process; a nonzero exit stops the benchmark."""
    from partseg.cli import main

    line = "partseg " + shlex.join(argv)
    print(f"\n$ {line}", flush=True)
    log.append(line)
    status = main(list(argv))
    if status != 0:
        raise SystemExit(f"bench_learning: `{line}` failed with exit status {status}")


def case_ids(count: int) -> list[str]:
    from partseg.phantom.cases import case_id

    return [case_id(i) for i in range(count)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every step of the benchmark; returns the summary."""
    work, log, stages = args.work, [], {}
    work.mkdir(parents=True, exist_ok=True)
    total = args.train_cases + args.test_cases
    test = case_ids(total)[args.train_cases :]
    shape = [str(s) for s in args.shape]
    spacing = low_spacing(args.shape)
    start = time.perf_counter()
    partseg(["phantom", str(work / "raw"), "--count", str(total), "--shape", *shape,
             "--seed", str(args.seed), "--kind", "brats"], log)  # fmt: skip
    stages["phantoms_s"] = time.perf_counter() - start
    start = time.perf_counter()
    partseg(["ingest", str(work / "raw"), str(work / "full.zarr"), "--no-progress"], log)
    partseg(["ingest", str(work / "raw"), str(work / "low.zarr"), "--spacing",
             *(str(s) for s in spacing), "--no-progress"], log)  # fmt: skip
    stages["ingest_s"] = time.perf_counter() - start
    outputs = {}
    for name in args.compares.split(","):
        recipe, store, variants = COMPARES[name]
        out = compare_dir(work, name, args.folds)
        argv = ["compare", str(ROOT / "configs" / f"{recipe}.yaml"), "--store",
                str(work / f"{store}.zarr"), "--out", str(out), "--budget", args.budget,
                "--no-progress", f"evaluation.test_cases=[{','.join(test)}]",
                f"base.data.val_fraction={1 / args.train_cases:.6g}"]  # fmt: skip
        if name == "brats_comparison":
            variants = args.comparison_variants.split(",")
        if variants:
            argv += ["--variants", ",".join(variants)]
        if store == "low":
            argv.append(f"evaluation.reference_store={work / 'full.zarr'}")
        if recipe == "brats_cpu_cascade":
            lowres, variant = LOWRES_RUN
            run_dir = compare_dir(work, lowres, args.folds) / "runs" / variant / "fold0"
            if not (run_dir / "summary.json").is_file():
                raise SystemExit(f"bench_learning: cpu_cascade needs the cpu_lowres run {run_dir}")
            argv += [f"prior.run={run_dir}", f"prior.store={work / 'low.zarr'}"]
        if args.folds:
            argv += ["--folds", str(args.folds)]
        if args.fold is not None:
            argv += ["--fold", args.fold]
        if args.quick:
            argv.append("--quick")
        start = time.perf_counter()
        partseg(argv, log)
        stages[f"{name}_s"] = time.perf_counter() - start
        outputs[name] = json.loads((out / "report" / "results.json").read_text())
    summary = summarize(outputs, args, test, spacing)
    summary["data"]["test_label_voxels"] = label_voxels(work / "full.zarr", test)
    summary["commands"] = log
    summary["wall_seconds"] = {k: round(v, 1) for k, v in stages.items()}
    for source in reversed(args.merge):  # the last named is the nearest: merged first
        summary = merge(json.loads(source.read_text()), summary, source)
    return summary


def label_voxels(store_url: Path, cases: Sequence[str]) -> dict[str, dict[str, int]]:
    """Voxels per label of each case: what tells that two runs held out the same phantoms."""
    import numpy as np

    from partseg.store.zarrstore import open_store

    store, counts = open_store(str(store_url)), {}
    for case_id in cases:
        values, n = np.unique(store[case_id].read_label(), return_counts=True)
        counts[case_id] = {str(int(v)): int(c) for v, c in zip(values, n, strict=True)}
    return counts


#: What must agree between two summaries for their variants to be merged into one.
MERGE_KEYS = ("quick", "budget", "folds", "data.train_cases", "data.test_cases", "data.shape",
              "data.seed")  # fmt: skip
#: How far the held-out labels of a merged summary may differ (the phantoms are generated in
#: floating point: another CPU may round a few boundary voxels the other way).
LABEL_TOLERANCE = 0.001


def merge(earlier: Mapping[str, Any], summary: dict[str, Any], source: Path) -> dict[str, Any]:
    """This run's summary plus the runs (variant, fold) of an ``earlier`` one it did not redo.

    A comparison too long for one sitting runs some variants or folds at a time (on a machine
    whose working folder may not survive): the runs already measured come from the earlier
    summary, with their per-case Dice, and every figure over them (mean ± sd over folds, the
    paired tests, the targets) is recomputed over all. Raises SystemExit when the two
    summaries measured different data or budgets.

    Example:
        >>> data = {"train_cases": 2, "test_cases": ["c"], "shape": [8, 8, 8], "seed": 1}
        >>> run = {"variant": "3d", "fold": 0, "compare": "brats_comparison",
        ...        "scores": {"WT": {"dice": 0.5}}, "cases": {"c": {"WT": {"dice": 0.5}}}}
        >>> old = {"quick": True, "budget": "1s", "folds": 2, "data": data, "commands": ["a"],
        ...        "runs": [run]}
        >>> new = {**old, "runs": [{**run, "fold": 1, "scores": {"WT": {"dice": 0.7}}}],
        ...        "commands": ["b"]}
        >>> merged = merge(old, new, Path("old.json"))
        >>> wt = merged["variants"]["3d"]["dice"]["WT"]
        >>> wt["folds"], round(wt["mean"], 3), merged["commands"], merged["merged"][0]["runs"]
        (2, 0.6, ['a', 'b'], ['3d fold 0'])
    """

    def get(data: Mapping[str, Any], dotted: str) -> Any:
        for key in dotted.split("."):
            data = data.get(key, {}) if isinstance(data, Mapping) else {}
        return data

    differ = [k for k in MERGE_KEYS if get(earlier, k) != get(summary, k)]
    differ += _label_differences(get(earlier, "data.test_label_voxels"),
                                 get(summary, "data.test_label_voxels"))  # fmt: skip
    if differ:
        raise SystemExit(
            f"bench_learning: --merge {source} measured something else ({', '.join(differ)} "
            "differ); rerun its variants here instead"
        )
    redone = {(r["variant"], r["fold"]) for r in summary["runs"]}

    def kept(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [r for r in records if (r["variant"], r["fold"]) not in redone]

    carried = kept(run_records(earlier))
    _refuse_mixed_scoring([*carried, *summary["runs"]], source)
    unseen = [*kept(earlier.get("out_of_fold_runs", [])), *summary.get("out_of_fold_runs", [])]
    records = {"runs": _ordered([*carried, *summary["runs"]]), "out_of_fold_runs": _ordered(unseen)}
    merged = {**summary, **derive(records["runs"], records["out_of_fold_runs"]), **records}
    merged["data"] = {**summary["data"], "split": {**get(earlier, "data.split"),
                                                   **get(summary, "data.split")}}  # fmt: skip
    merged["commands"] = [*earlier.get("commands", []), *summary.get("commands", [])]
    # a stage rerun to resume takes seconds: the longer time is the one that did the work
    walls = [earlier.get("wall_seconds", {}), summary.get("wall_seconds", {})]
    stages = dict.fromkeys([*walls[0], *walls[1]])
    merged["wall_seconds"] = {k: max(w.get(k, 0.0) for w in walls) for k in stages}
    # the sittings that made the earlier summary stay listed before the one merged now
    merged["merged"] = [*earlier.get("merged", []), *summary.get("merged", []), {
        "from": earlier.get("command", str(source)),
        "runs": [f"{r['variant']} fold {r['fold']}" for r in carried],
        "labels_checked": bool(get(earlier, "data.test_label_voxels")),
    }]  # fmt: skip
    return merged


def _refuse_mixed_scoring(records: Sequence[Mapping[str, Any]], source: Path) -> None:
    """Raise SystemExit when runs of one comparison were scored with other settings (runs
    recorded before the settings were, ``scoring`` empty or absent, are not checked)."""
    scored: dict[str, dict[str, list[str]]] = {}  # compare -> scoring -> runs
    for r in (r for r in records if r.get("scoring")):
        group = scored.setdefault(r["compare"], {})
        group.setdefault(json.dumps(r["scoring"], sort_keys=True), []).append(
            f"{r['variant']} fold {r['fold']}"
        )
    for compare, seen in scored.items():
        if len(seen) > 1:
            ways = "; ".join(f"{', '.join(runs)}: {text}" for text, runs in seen.items())
            raise SystemExit(
                f"bench_learning: --merge {source}: the {compare} runs were scored differently "
                f"({ways}); rerun the earlier ones here (finished runs are only re-scored)"
            )


def run_records(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-run records of a summary; one written before they were kept (it has per-case
    Dice per variant only, from one split) gives one record per variant, as fold 0."""
    if "runs" in summary:
        return list(summary["runs"])
    records = []
    for name, entry in summary.get("variants", {}).items():
        dice = entry.get("dice", {})
        cases: dict[str, dict[str, dict[str, float]]] = {}
        for region, values in dice.items():
            for case_id, value in values.get("per_case", {}).items():
                cases.setdefault(case_id, {})[region] = {"dice": value}
        records.append({
            "variant": name, "fold": 0, "compare": entry["compare"],
            "hardware": entry.get("hardware", summary.get("hardware")),
            "scores": {region: {"dice": values.get("mean")} for region, values in dice.items()},
            "costs": {k: entry[k] for k in COST_KEYS if k in entry}, "cases": cases,
        })  # fmt: skip
    return records


def _label_differences(
    earlier: Mapping[str, Mapping[str, int]], now: Mapping[str, Mapping[str, int]]
) -> list[str]:
    """The held-out cases whose label counts differ by more than :data:`LABEL_TOLERANCE`.

    An earlier summary without counts (written before they were recorded) is not checked.

    Example:
        >>> _label_differences({"c": {"0": 10000, "1": 10}}, {"c": {"0": 9999, "1": 11}})
        []
        >>> _label_differences({"c": {"0": 10000, "1": 10}}, {"c": {"0": 9990, "1": 20}})
        ['labels of c']
    """
    if not earlier or not now:
        return []
    differ = []
    for case_id in sorted({*earlier, *now}):
        a, b = earlier.get(case_id, {}), now.get(case_id, {})
        total = max(sum(a.values()), sum(b.values()), 1)
        moved = sum(abs(a.get(k, 0) - b.get(k, 0)) for k in {*a, *b})
        if moved > LABEL_TOLERANCE * total:
            differ.append(f"labels of {case_id}")
    return differ


def compare_dir(work: Path, name: str, folds: int) -> Path:
    """The output folder of one comparison: a cross-validated one apart from the single split.

    Example:
        >>> compare_dir(Path("w"), "cpu_lowres", 0), compare_dir(Path("w"), "cpu_lowres", 3)
        (PosixPath('w/compare_cpu_lowres'), PosixPath('w/compare_cpu_lowres_folds3'))
    """
    return work / (f"compare_{name}_folds{folds}" if folds else f"compare_{name}")


#: The scoring settings (``results.json``'s ``scoring``) a run record keeps: runs of one
#: comparison scored with other settings (say, with and without the nonzero mask) are not merged.
SCORING_KEYS = ("partition", "blend", "overlap", "nonzero_mask", "min_component_size",
                "hd95_convention")  # fmt: skip
#: The costs of a run the summary keeps (``RunResult.costs``).
COST_KEYS = ("budget_seconds", "step_seconds", "steps", "train_seconds", "val_seconds",
             "predict_seconds", "parameters", "air_voxels", "masked_voxels")  # fmt: skip


def summarize(
    outputs: Mapping[str, Mapping[str, Any]],
    args: argparse.Namespace,
    test: Sequence[str],
    spacing: Sequence[float],
) -> dict[str, Any]:
    """The benchmark JSON from the comparisons' ``results.json`` files."""
    records: dict[str, list[dict[str, Any]]] = {"runs": [], "out_of_fold_runs": []}
    for compare, data in outputs.items():
        hardware = data.get("settings", {}).get("hardware")
        scoring = {k: v for k, v in data.get("scoring", {}).items() if k in SCORING_KEYS}
        unseen = data.get("out_of_fold", {}).get("runs", [])
        for key, runs in (("runs", data["runs"]), ("out_of_fold_runs", unseen)):
            records[key] += [_record(r, compare, hardware, scoring) for r in runs
                             if r["variant"] in data["variants"]]  # fmt: skip
    hardware = next(iter(outputs.values()), {}).get("settings", {}).get("hardware")
    return {
        "benchmark": "learning on realistic phantoms within a time budget (issue 15)",
        "quick": args.quick,
        "data": {"train_cases": args.train_cases, "test_cases": list(test),
                 "shape": list(args.shape), "seed": args.seed, "low_spacing_mm": list(spacing),
                 "split": {name: out.get("settings", {}).get("training")
                           for name, out in outputs.items()}},
        "budget": args.budget,
        "folds": args.folds,
        "hardware": hardware,
        **derive(records["runs"], records["out_of_fold_runs"]),
        **records,
    }  # fmt: skip


def _record(
    run: Mapping[str, Any], compare: str, hardware: str | None, scoring: Mapping[str, Any]
) -> dict[str, Any]:
    """One run of a ``results.json`` as the summary keeps it: WT/TC/ET scores and per-case
    values, the costs of :data:`COST_KEYS`, the comparison, the machine and how it was scored
    (:data:`SCORING_KEYS`; empty in a report written before reports recorded it)."""

    def regions(targets: Mapping[str, Any]) -> dict[str, Any]:
        return {region: targets[name] for region, name in REGIONS.items() if name in targets}

    return {
        "variant": run["variant"], "fold": run["fold"], "compare": compare, "hardware": hardware,
        "scoring": dict(scoring), "scores": regions(run.get("scores", {})),
        "costs": {k: v for k, v in run.get("costs", {}).items() if k in COST_KEYS},
        "cases": {case_id: regions(t) for case_id, t in run.get("cases", {}).items()},
    }  # fmt: skip


def _ordered(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Run records in the order of :data:`COMPARES`, then of folds (stable within)."""
    order = list(COMPARES)
    return sorted(records, key=lambda r: (order.index(r["compare"]), r["fold"]))


def derive(
    records: Sequence[Mapping[str, Any]], unseen: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """Per-variant figures, paired tests and targets from the run records (and the out-of-fold
    ones): Dice mean ± sd over folds and per case (mean over folds), the costs' means."""
    from partseg.report import (
        RunResult,
        aggregate_costs,
        aggregate_scores,
        case_scores,
        mean_std,
        paired_tests,
    )

    records = _ordered(records)
    runs = [RunResult.from_dict(r) for r in records]
    unseen_runs = [RunResult.from_dict(r) for r in unseen]
    costs = {row["variant"]: row for row in aggregate_costs(runs)}
    per_case = case_scores(runs)
    variants: dict[str, dict[str, Any]] = {}
    for row in aggregate_scores(runs):
        name = row["variant"]
        if name not in variants:
            mine = [r for r in records if r["variant"] == name]
            variants[name] = {
                "compare": mine[0]["compare"], "dice": {},
                **{k: costs[name].get(k) for k in COST_KEYS if k in costs[name]},
                **{f"{k}_sd": costs[name].get(f"{k}_std") for k in ("steps", "step_seconds")
                   if k in costs[name]},
                "hardware": " / ".join(dict.fromkeys(str(r.get("hardware")) for r in mine)),
            }  # fmt: skip
        variants[name]["dice"][row["target"]] = {
            "mean": row.get("dice"), "sd": row.get("dice_std"), "folds": row["folds"],
            "per_case": per_case.get(name, {}).get(row["target"], {}),
        }  # fmt: skip
    for name, by_region in case_scores(unseen_runs).items():
        for region in REGIONS:
            cases = by_region.get(region, {})
            mean, sd = mean_std(cases.values())
            entry = variants[name].setdefault("out_of_fold_dice", {})
            entry[region] = {"mean": mean, "sd": sd, "n": len(cases), "per_case": cases}
    return {
        "variants": variants,
        "paired_tests": paired_tests(runs),
        **({"paired_tests_out_of_fold": paired_tests(unseen_runs)} if unseen_runs else {}),
        "targets": targets(variants),
    }


def targets(variants: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The issue's targets, checked: best CPU recipe and every BraTS-comparison variant."""

    def mean(entry: Mapping[str, Any], region: str) -> float:
        value = entry["dice"].get(region, {}).get("mean")
        return float("nan") if value is None else float(value)

    cpu = {n: v for n, v in variants.items() if v["compare"] != "brats_comparison"}
    result: dict[str, Any] = {}
    if cpu:
        best = max(cpu, key=lambda n: mean(cpu[n], "WT"))
        result["best_cpu_recipe"] = best
        result["best_cpu_recipe_met"] = {
            f"{region}>={goal}": mean(cpu[best], region) >= goal
            for region, goal in CPU_TARGETS.items()
        }
    comparison = {n: v for n, v in variants.items() if v["compare"] == "brats_comparison"}
    if comparison:
        result["brats_comparison_met"] = {
            name: mean(entry, "WT") >= COMPARISON_TARGET["WT"] for name, entry in comparison.items()
        }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    from partseg.atomic import write_text

    args = parse_args(argv)
    summary = run(args)
    summary["command"] = "python tools/bench_learning.py " + shlex.join(
        list(sys.argv[1:] if argv is None else argv)
    )
    text = json.dumps(summary, indent=2, default=float)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
