"""Out-of-fold scores: every training case scored by the fold model that did not train on it.

With K folds each training case validates in exactly one fold, so the K fold models together
predict every training case once, unseen (nnU-Net's cross-validation summary). Where the held-out
test set is small (3 cases give a paired Wilcoxon test no p below 0.25), these out-of-fold cases
are what a paired test between variants can rest on: the tests of
:func:`~partseg.report.stats.paired_tests` run on them unchanged, because
:func:`~partseg.report.results.case_scores` pools the cases of a variant's folds.

Example:
    >>> runs = [RunResult("3d", f, {}, cases={c: {"WT": {"dice": d}}})
    ...         for f, c, d in [(0, "c1", 0.6), (0, "c2", 0.8), (1, "c3", 0.7)]]
    >>> row = out_of_fold_scores(runs)[0]
    >>> row["variant"], row["target"], row["n"], round(row["dice"], 3), round(row["dice_std"], 3)
    ('3d', 'WT', 3, 0.7, 0.1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from partseg.report.results import RunResult, case_scores, mean_std

#: How a report explains its out-of-fold section (shown under its table).
OUT_OF_FOLD_NOTE = (
    "Out-of-fold: every training case is predicted by the one fold model that validated on it "
    "(it did not train on it), so each case counts once; mean ± standard deviation over those "
    "cases (n). The paired tests below pair the variants over these cases."
)


def out_of_fold_scores(runs: Sequence[RunResult], metric: str = "dice") -> list[dict[str, Any]]:
    """One row per (variant, target): ``metric`` mean and sd over the out-of-fold cases, ``n``.

    ``runs`` are one :class:`RunResult` per variant and fold, scored on that fold's validation
    cases; a case scored by several folds of a variant (not the case for a K-fold split) would
    count once, with the mean of its scores.
    """
    rows = []
    for variant, targets in case_scores(runs, metric).items():
        for target, cases in targets.items():
            mean, std = mean_std(cases.values())
            rows.append({"variant": variant, "target": target, metric: mean,
                         f"{metric}_std": std, "n": len(cases)})  # fmt: skip
    return rows


__all__: Sequence[str] = ("OUT_OF_FOLD_NOTE", "out_of_fold_scores")
