"""Comparison reports: tables (Markdown, CSV, JSON), paired tests and PNG plots of variants.

The report is written from plain data so it can be rebuilt without retraining: one
:class:`RunResult` per trained variant and fold. Modules, one concept each:

* :mod:`~partseg.report.results`: :class:`RunResult`, aggregation over folds
  (:func:`aggregate_scores`, :func:`aggregate_costs`: mean and sample standard deviation) and
  per-case scores (:func:`case_scores`);
* :mod:`~partseg.report.stats`: paired Wilcoxon signed-rank tests between variants over the
  test cases (:func:`paired_tests`);
* :mod:`~partseg.report.crossval`: out-of-fold scores of a K-fold comparison, every training
  case scored once by the fold model that did not train on it (:func:`out_of_fold_scores`);
* :mod:`~partseg.report.tables`: :func:`write_report` (``report.md``, ``results.csv``,
  ``results.json``) and the Markdown tables;
* :mod:`~partseg.report.plots`: loss curves, class distribution, confusion matrices, overlays,
  per-case distributions (matplotlib Agg backend, no display needed).

Example:
    >>> import tempfile
    >>> run = RunResult("3d", 0, scores={"tumor": {"dice": 0.8}}, costs={"parameters": 10})
    >>> rows = aggregate_scores([run])
    >>> rows[0]["dice"]
    0.8
    >>> out = write_report(tempfile.mkdtemp(), [run], title="demo")
    >>> sorted(p.name for p in out.iterdir())
    ['report.md', 'results.csv', 'results.json']
"""

from partseg.report.crossval import OUT_OF_FOLD_NOTE, out_of_fold_scores
from partseg.report.plots import (
    CURVES,
    label_colours,
    plot_case_distribution,
    plot_class_distribution,
    plot_confusion_matrices,
    plot_loss_curves,
    plot_overlays,
)
from partseg.report.results import (
    COST_ORDER,
    LOWER_IS_BETTER,
    METRIC_ORDER,
    RunResult,
    aggregate_costs,
    aggregate_scores,
    case_scores,
    hd95_statement,
    mean_std,
    ordered,
)
from partseg.report.stats import TEST_NOTE, paired_test, paired_tests
from partseg.report.tables import (
    cost_table,
    detail_table,
    fmt,
    headline_table,
    markdown_report,
    out_of_fold_table,
    paired_table,
    results_rows,
    write_report,
)

__all__ = [
    "COST_ORDER",
    "CURVES",
    "LOWER_IS_BETTER",
    "METRIC_ORDER",
    "OUT_OF_FOLD_NOTE",
    "TEST_NOTE",
    "RunResult",
    "aggregate_costs",
    "aggregate_scores",
    "case_scores",
    "cost_table",
    "detail_table",
    "fmt",
    "hd95_statement",
    "headline_table",
    "label_colours",
    "markdown_report",
    "mean_std",
    "ordered",
    "out_of_fold_scores",
    "out_of_fold_table",
    "paired_table",
    "paired_test",
    "paired_tests",
    "plot_case_distribution",
    "plot_class_distribution",
    "plot_confusion_matrices",
    "plot_loss_curves",
    "plot_overlays",
    "results_rows",
    "write_report",
]
