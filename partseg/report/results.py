"""Run results and their aggregation over folds and test cases.

One :class:`RunResult` per trained variant and fold holds its scores per class/region averaged
over the test cases, the per-case scores, its costs, confusion matrix and training history.
:func:`aggregate_scores` and :func:`aggregate_costs` reduce folds to mean and spread (sample
standard deviation over folds); :func:`case_scores` gives each variant's per-case scores
(mean over folds), which the paired tests (:mod:`partseg.report.stats`) and the distribution
plots (:mod:`partseg.report.plots`) read.

Example:
    >>> run = RunResult("3d", 0, scores={"tumor": {"dice": 0.8}}, costs={"parameters": 10})
    >>> aggregate_scores([run])[0]["dice"]
    0.8
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from partseg.metrics import HD95_CONVENTIONS, METRICS

#: Metric columns in the order tables show them (the table metrics of
#: :data:`partseg.metrics.METRICS`); metrics not listed follow alphabetically.
METRIC_ORDER = tuple(name for name in METRICS if METRICS.get(name).in_tables)


def hd95_statement(convention: str) -> str:
    """How a report states its HD95 convention (the name, then what it means).

    Example:
        >>> hd95_statement("pooled")
        "pooled: 95th percentile of both directions' distances pooled (MedPy hd95)"
    """
    name = HD95_CONVENTIONS.check(convention, key="hd95_convention")
    entry = next(e for e in HD95_CONVENTIONS.entries() if e.name == name)
    return f"{entry.name}: {entry.help}"


#: Cost columns in the order tables show them.
COST_ORDER = (
    "parameters",
    "peak_memory_mb",
    "saved_activation_mb",
    "budget_seconds",
    "step_seconds",
    "steps",
    "epoch_seconds",
    "train_seconds",
    "val_seconds",
    "predict_seconds",
    "seam_index",
    "air_voxels",
    "masked_voxels",
)

#: Metrics where lower is better (the rest: higher is better).
LOWER_IS_BETTER = frozenset(name for name in METRICS if METRICS.get(name).lower_is_better)


@dataclass(frozen=True)
class RunResult:
    """What one trained variant (one fold) scored and cost.

    Attributes:
        variant: variant name, e.g. ``"3d_context"``.
        fold: fold index (0 when there is a single split).
        scores: target (class or region name) -> metric -> value, averaged over test cases.
        costs: ``parameters``, ``peak_memory_mb`` (CUDA peak) or ``saved_activation_mb`` (CPU
            estimate), ``epoch_seconds``, ``seam_index``...; None when unknown.
        confusion: (K, K) voxel counts, rows = ground truth, columns = prediction.
        history: the run's per-epoch records (``metrics.jsonl``).
        run_dir: where the run lives.
        cases: test case -> target -> metric -> value (the per-case scores behind ``scores``;
            the paired tests and the distribution plots read them).
    """

    variant: str
    fold: int
    scores: Mapping[str, Mapping[str, float | None]]
    costs: Mapping[str, float | None] = field(default_factory=dict)
    confusion: tuple[tuple[int, ...], ...] | None = None
    history: tuple[Mapping[str, Any], ...] = ()
    run_dir: str = ""
    cases: Mapping[str, Mapping[str, Mapping[str, float | None]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse: :meth:`from_dict`)."""
        data = asdict(self)
        data["scores"] = {t: dict(m) for t, m in self.scores.items()}
        data["costs"] = dict(self.costs)
        data["history"] = [dict(r) for r in self.history]
        data["cases"] = {c: {t: dict(m) for t, m in ts.items()} for c, ts in self.cases.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        confusion = data.get("confusion")
        if confusion is not None:
            confusion = tuple(tuple(int(v) for v in row) for row in confusion)
        return cls(
            variant=str(data["variant"]),
            fold=int(data.get("fold", 0)),
            scores={str(t): dict(m) for t, m in data.get("scores", {}).items()},
            costs=dict(data.get("costs", {})),
            confusion=confusion,
            history=tuple(dict(r) for r in data.get("history", ())),
            run_dir=str(data.get("run_dir", "")),
            cases={
                str(c): {str(t): dict(m) for t, m in ts.items()}
                for c, ts in data.get("cases", {}).items()
            },
        )


def finite(values: Iterable[Any]) -> list[float]:
    """The finite numbers of ``values`` as floats (None, NaN, inf, bools and strings dropped).

    Example:
        >>> finite([1, None, float("nan"), 2.5, True])
        [1.0, 2.5]
    """
    out = []
    for value in values:
        if value is None or isinstance(value, bool | str):
            continue
        value = float(value)
        if math.isfinite(value):
            out.append(value)
    return out


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the finite values (None when there are none).

    Example:
        >>> mean_std([1.0, 3.0, None, float("nan")])
        (2.0, 1.4142135623730951)
        >>> mean_std([5])
        (5.0, None)
    """
    kept = finite(values)
    if not kept:
        return None, None
    mean = float(np.mean(kept))
    std = float(np.std(kept, ddof=1)) if len(kept) > 1 else None
    return mean, std


def ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    """``names`` sorted by their position in ``order``, unknown names last, alphabetically."""
    unique = set(names)
    known = [n for n in order if n in unique]
    return known + sorted(unique - set(order))


def variants_of(runs: Sequence[RunResult]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        seen.setdefault(run.variant, None)
    return list(seen)


def targets_of(runs: Sequence[RunResult]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        for target in run.scores:
            seen.setdefault(target, None)
    return list(seen)


def aggregate_scores(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per (variant, target): each metric's mean over folds and ``<metric>_std``.

    Example:
        >>> runs = [RunResult("a", f, {"wt": {"dice": d}}) for f, d in [(0, 0.6), (1, 0.8)]]
        >>> row = aggregate_scores(runs)[0]
        >>> row["variant"], row["target"], row["folds"], round(row["dice"], 3)
        ('a', 'wt', 2, 0.7)
    """
    rows = []
    for variant in variants_of(runs):
        mine = [r for r in runs if r.variant == variant]
        for target in targets_of(mine):
            per_fold = [r.scores[target] for r in mine if target in r.scores]
            metrics = ordered({m for s in per_fold for m in s}, METRIC_ORDER)
            row: dict[str, Any] = {"variant": variant, "target": target, "folds": len(per_fold)}
            for metric in metrics:
                row[metric], row[f"{metric}_std"] = mean_std(s.get(metric) for s in per_fold)
            rows.append(row)
    return rows


def aggregate_costs(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per variant: each cost's mean over folds and ``<cost>_std``."""
    rows = []
    for variant in variants_of(runs):
        mine = [r for r in runs if r.variant == variant]
        row: dict[str, Any] = {"variant": variant, "folds": len(mine)}
        for key in ordered({k for r in mine for k in r.costs}, COST_ORDER):
            row[key], row[f"{key}_std"] = mean_std(r.costs.get(key) for r in mine)
        rows.append(row)
    return rows


def case_scores(
    runs: Sequence[RunResult], metric: str = "dice"
) -> dict[str, dict[str, dict[str, float]]]:
    """Variant -> target -> test case -> ``metric`` averaged over the variant's folds.

    Every fold's model predicts the same held-out cases, so a case's score is the mean of its
    folds' scores (non-finite values left out; a case without any finite value is left out).

    Example:
        >>> runs = [RunResult("a", f, {}, cases={"c1": {"WT": {"dice": d}}})
        ...         for f, d in [(0, 0.6), (1, 0.8)]]
        >>> case_scores(runs)
        {'a': {'WT': {'c1': 0.7}}}
    """
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in runs:
        for case_id, targets in run.cases.items():
            for target, metrics in targets.items():
                per_case = values.setdefault(run.variant, {}).setdefault(target, {})
                per_case.setdefault(case_id, []).extend(finite([metrics.get(metric)]))
    return {
        variant: {
            target: {c: float(np.mean(v)) for c, v in cases.items() if v}
            for target, cases in targets.items()
        }
        for variant, targets in values.items()
    }


__all__: Sequence[str] = (
    "COST_ORDER",
    "LOWER_IS_BETTER",
    "METRIC_ORDER",
    "RunResult",
    "aggregate_costs",
    "aggregate_scores",
    "case_scores",
    "finite",
    "hd95_statement",
    "mean_std",
    "ordered",
    "targets_of",
    "variants_of",
)
