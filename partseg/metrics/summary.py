"""Statistics of case results over cases (mean, std, median, min, max, n)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _is_section(value: object) -> bool:
    return isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values())


def _stats(values: list[float]) -> dict[str, float]:
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if finite.size == 0:
        return {"mean": 0.0, "std": 0.0, "median": 0.0, "min": 0.0, "max": 0.0, "n": 0}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "median": float(np.median(finite)),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "n": int(finite.size),
    }


def summarize(per_case: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> dict:
    """Mean, std (population, ddof 0), median, min, max and count per target and metric.

    Every section of the case results of the form name -> {metric: value} (``classes``,
    ``regions``, later ``seam``) is summarised; non-finite values are left out and ``n`` says how
    many cases a statistic covers (never NaN: an empty list gives zeros with ``n = 0``). Each
    target also gets ``n_cases``, ``n_gt_empty`` and ``n_pred_empty`` when the voxel counts are
    present, and the confusion matrices are added up.

    Example:
        >>> a = {"classes": {"tumor": {"dice": 1.0}}}
        >>> b = {"classes": {"tumor": {"dice": 0.5}}}
        >>> summarize([a, b])["classes"]["tumor"]["dice"]["mean"]
        0.75
    """
    cases = list(per_case.values()) if isinstance(per_case, Mapping) else list(per_case)
    summary: dict[str, Any] = {"n_cases": len(cases)}
    section_names = [k for case in cases for k, v in case.items() if _is_section(v)]
    for section in dict.fromkeys(section_names):
        targets = [t for case in cases for t in case.get(section, {})]
        summary[section] = {
            target: _summarize_target(
                [case[section][target] for case in cases if target in case.get(section, {})]
            )
            for target in dict.fromkeys(targets)
        }
    matrices = [np.asarray(c["confusion_matrix"]) for c in cases if "confusion_matrix" in c]
    if matrices and len({m.shape for m in matrices}) == 1:
        summary["confusion_matrix"] = np.sum(matrices, axis=0).tolist()
    return summary


def _summarize_target(entries: list[Mapping[str, float]]) -> dict[str, Any]:
    metrics = [m for entry in entries for m in entry]
    result: dict[str, Any] = {
        metric: _stats([float(e[metric]) for e in entries if metric in e])
        for metric in dict.fromkeys(metrics)
    }
    result["n_cases"] = len(entries)
    if all("gt_voxels" in e and "pred_voxels" in e for e in entries):
        result["n_gt_empty"] = sum(1 for e in entries if e["gt_voxels"] == 0)
        result["n_pred_empty"] = sum(1 for e in entries if e["pred_voxels"] == 0)
    return result
