"""Paired tests between variants over the held-out test cases (Wilcoxon signed-rank).

Every variant predicts the same test cases, so two variants are compared case by case: for each
target (class or region) the pairs are the two variants' per-case Dice
(:func:`~partseg.report.results.case_scores`: mean over folds), and
:func:`scipy.stats.wilcoxon` tests whether their differences are centred on 0 (two-sided).

Rules, stated in every report that shows the tests:

* **Pairs**: the test cases both variants scored with a finite value (a case missing on either
  side is left out); ``n`` is their number.
* **Ties and zeros**: a zero difference (both variants equally good on a case, e.g. both 1.0)
  carries no sign and is dropped (Wilcoxon's original rule, ``zero_method="wilcox"``);
  ``n_nonzero`` counts the rest. Differences are rounded to 1e-9 first, so float noise makes no
  difference. The p-value is exact (the distribution of the signed-rank statistic) for up to
  50 nonzero differences without tied magnitudes, and the normal approximation with tie
  correction otherwise (``method`` says which).
* **Too few cases**: no nonzero difference gives no test (``p`` None); with ``n_nonzero`` pairs
  the exact two-sided p can be no smaller than ``2 / 2 ** n_nonzero`` (``p_min``: 0.25 with 3
  cases, 0.031 with 6), so a comparison on 3 test cases can never reach p < 0.05, however large
  the differences.

Example:
    >>> row = paired_test({"c1": 0.9, "c2": 0.8, "c3": 0.7}, {"c1": 0.5, "c2": 0.8, "c3": 0.4})
    >>> row["n"], row["n_nonzero"], row["p"], row["p_min"], row["wins"], row["losses"]
    (3, 2, 0.5, 0.5, 2, 0)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from partseg.report.results import RunResult, case_scores, targets_of, variants_of

#: Above this many nonzero differences scipy's normal approximation is used.
EXACT_MAX = 50


def paired_test(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, Any]:
    """Wilcoxon signed-rank test of ``a`` against ``b`` (case -> value), two-sided.

    Returns:
        ``n`` (pairs), ``n_nonzero``, ``median_diff`` and ``mean_diff`` (a - b, None without
        pairs), ``wins`` / ``losses`` (cases where a is higher / lower), ``statistic``, ``p``
        (None without a nonzero difference), ``p_min`` (the smallest exact p these pairs
        allow) and ``method`` (``exact``, ``approx`` or ``none``). See the module docstring.
    """
    from scipy.stats import wilcoxon

    cases = sorted(c for c in a if c in b and _finite(a[c]) and _finite(b[c]))
    diff = np.round(np.array([a[c] - b[c] for c in cases], dtype=np.float64), 9)
    nonzero = diff[diff != 0]
    row: dict[str, Any] = {
        "n": len(cases),
        "n_nonzero": int(nonzero.size),
        "median_diff": float(np.median(diff)) if diff.size else None,
        "mean_diff": float(np.mean(diff)) if diff.size else None,
        "wins": int((diff > 0).sum()),
        "losses": int((diff < 0).sum()),
        "statistic": None,
        "p": None,
        "p_min": 2.0 / 2**nonzero.size if nonzero.size else None,
        "method": "none",
    }
    if not nonzero.size:
        return row
    ties = np.unique(np.abs(nonzero)).size < nonzero.size
    method = "exact" if nonzero.size <= EXACT_MAX and not ties else "approx"
    result = wilcoxon(
        nonzero,
        zero_method="wilcox",
        alternative="two-sided",
        method="exact" if method == "exact" else "asymptotic",
        correction=False,
    )
    row.update(statistic=float(result.statistic), p=min(1.0, float(result.pvalue)), method=method)
    return row


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def paired_tests(runs: Sequence[RunResult], metric: str = "dice") -> list[dict[str, Any]]:
    """Every pair of variants (in report order) on every target, by :func:`paired_test`.

    Rows: ``target``, ``a``, ``b``, ``metric`` and the fields of :func:`paired_test`
    (differences are a - b). Pairs without a common test case are left out.

    Example:
        >>> runs = [RunResult(v, 0, {}, cases={c: {"WT": {"dice": d + s}}
        ...                                    for c, d in [("c1", 0.5), ("c2", 0.6)]})
        ...         for v, s in [("2d", 0.0), ("3d", 0.2)]]
        >>> [(r["a"], r["b"], r["n"], round(r["median_diff"], 3)) for r in paired_tests(runs)]
        [('2d', '3d', 2, -0.2)]
    """
    scores = case_scores(runs, metric)
    targets = [*targets_of(runs), *(t for v in scores.values() for t in v)]
    rows = []
    for target in dict.fromkeys(targets):
        for first, second in itertools.combinations(variants_of(runs), 2):
            a = scores.get(first, {}).get(target, {})
            b = scores.get(second, {}).get(target, {})
            row = paired_test(a, b)
            if row["n"]:
                rows.append({"target": target, "a": first, "b": second, "metric": metric, **row})
    return rows


#: How a report explains its paired tests (shown under the table).
TEST_NOTE = (
    "Paired Wilcoxon signed-rank tests (two-sided, scipy.stats.wilcoxon) of per-case Dice "
    "between two variants over the same held-out cases (a case's Dice is the mean over "
    "folds); diff = a - b. Zero differences are dropped (zero_method='wilcox'); p is exact up "
    f"to {EXACT_MAX} nonzero pairs without tied magnitudes, else the normal approximation. "
    "With n nonzero pairs no p below p_min = 2 / 2^n is possible (3 cases: 0.25): few test "
    "cases cannot show a difference, however large; no p without a nonzero difference."
)


__all__: Sequence[str] = ("EXACT_MAX", "TEST_NOTE", "paired_test", "paired_tests")
