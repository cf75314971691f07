"""The report files: ``report.md``, ``results.csv`` and ``results.json``.

Tables are Markdown, one cell ``mean ± std`` over folds (:func:`fmt`); ``results.json`` holds
every aggregated row, the paired tests (:mod:`partseg.report.stats`), every run with its
per-case scores, and the settings (store, split, budget, hardware).

Example:
    >>> import tempfile
    >>> from partseg.report.results import RunResult
    >>> run = RunResult("3d", 0, scores={"tumor": {"dice": 0.8}}, costs={"parameters": 10})
    >>> out = write_report(tempfile.mkdtemp(), [run], title="demo")
    >>> sorted(p.name for p in out.iterdir())
    ['report.md', 'results.csv', 'results.json']
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partseg.atomic import write_text
from partseg.metrics import DEFAULT_HD95, HD95_CONVENTIONS
from partseg.report.crossval import OUT_OF_FOLD_NOTE, out_of_fold_scores
from partseg.report.results import (
    COST_ORDER,
    METRIC_ORDER,
    RunResult,
    aggregate_costs,
    aggregate_scores,
    hd95_statement,
    ordered,
    targets_of,
    variants_of,
)
from partseg.report.stats import TEST_NOTE, paired_tests


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def results_rows(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    """The rows of ``results.csv``: scores per (variant, target) with the variant's costs."""
    costs = {row["variant"]: row for row in aggregate_costs(runs)}
    rows = []
    for row in aggregate_scores(runs):
        extra = {k: v for k, v in costs[row["variant"]].items() if k not in ("variant", "folds")}
        rows.append({**row, **extra})
    return rows


def fmt(value: float | None, std: float | None = None, *, digits: int = 3) -> str:
    """A table cell: ``0.812 ± 0.020``, ``-`` when unknown.

    Example:
        >>> fmt(0.81234, 0.02), fmt(None), fmt(1234567.0, digits=0)
        ('0.812 ± 0.020', '-', '1234567')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    text = f"{value:.{digits}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {std:.{digits}f}"
    return text


def _markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def headline_table(runs: Sequence[RunResult], metric: str = "dice") -> str:
    """Markdown table: one row per variant, one column per target, ``metric`` mean ± std."""
    rows = aggregate_scores(runs)
    targets = targets_of(runs)
    body = []
    for variant in variants_of(runs):
        cells = [variant]
        for target in targets:
            match = [r for r in rows if r["variant"] == variant and r["target"] == target]
            row = match[0] if match else {}
            cells.append(fmt(row.get(metric), row.get(f"{metric}_std")))
        body.append(cells)
    return _markdown_table(["variant", *targets], body)


def detail_table(runs: Sequence[RunResult], variant: str) -> str:
    """Markdown table of every metric per target for one variant."""
    rows = [r for r in aggregate_scores(runs) if r["variant"] == variant]
    metrics = ordered(
        {k for r in rows for k in r if k not in ("variant", "target", "folds")}
        - {k for r in rows for k in r if k.endswith("_std")},
        METRIC_ORDER,
    )
    body = [[r["target"], *(fmt(r.get(m), r.get(f"{m}_std")) for m in metrics)] for r in rows]
    return _markdown_table(["target", *metrics], body)


def cost_table(runs: Sequence[RunResult]) -> str:
    """Markdown table of the costs per variant."""
    rows = aggregate_costs(runs)
    keys = ordered({k for r in rows for k in r if k not in ("variant", "folds")}, COST_ORDER)
    keys = [k for k in keys if not k.endswith("_std")]
    digits = {"parameters": 0, "peak_memory_mb": 1, "saved_activation_mb": 1, "epoch_seconds": 1,
              "budget_seconds": 0, "steps": 0, "train_seconds": 1, "val_seconds": 1,
              "air_voxels": 0, "masked_voxels": 0}  # fmt: skip
    body = [
        [r["variant"], *(fmt(r.get(k), r.get(f"{k}_std"), digits=digits.get(k, 3)) for k in keys)]
        for r in rows
    ]
    return _markdown_table(["variant", *keys], body)


def out_of_fold_table(rows: Sequence[Mapping[str, Any]], metric: str = "dice") -> str:
    """Markdown table: one row per variant, one column per target, ``mean ± sd (n)``.

    Example:
        >>> out_of_fold_table([{"variant": "3d", "target": "WT", "dice": 0.7, "dice_std": 0.1,
        ...                     "n": 3}]).splitlines()[2]
        '| 3d | 0.700 ± 0.100 (3) |'
    """
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    cell = {(r["variant"], r["target"]): r for r in rows}
    body = []
    for variant in variants:
        cells = [variant]
        for target in targets:
            row = cell.get((variant, target))
            text = fmt(row.get(metric), row.get(f"{metric}_std")) if row else "-"
            cells.append(f"{text} ({row['n']})" if row else text)
        body.append(cells)
    return _markdown_table(["variant", *targets], body)


def paired_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`~partseg.report.stats.paired_tests` rows.

    Example:
        >>> row = {"target": "WT", "a": "2d", "b": "3d", "n": 3, "n_nonzero": 3, "wins": 0,
        ...        "losses": 3, "median_diff": -0.2, "p": 0.25, "p_min": 0.25, "method": "exact"}
        >>> paired_table([row]).splitlines()[2]
        '| WT | 2d vs 3d | 3 (3) | 0 / 3 | -0.200 | 0.250 | 0.250 | exact |'
    """
    header = ["target", "a vs b", "pairs (nonzero)", "a wins / b wins", "median diff",
              "p", "p_min", "method"]  # fmt: skip
    body = [
        [
            r["target"],
            f"{r['a']} vs {r['b']}",
            f"{r['n']} ({r['n_nonzero']})",
            f"{r['wins']} / {r['losses']}",
            fmt(r["median_diff"]),
            fmt(r["p"]),
            fmt(r["p_min"]),
            r["method"],
        ]
        for r in rows
    ]
    return _markdown_table(header, body)


def write_report(
    out_dir: str | os.PathLike,
    runs: Sequence[RunResult],
    *,
    title: str = "partseg comparison",
    settings: Mapping[str, Any] | None = None,
    figures: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    hd95_convention: str = DEFAULT_HD95,
    out_of_fold: Sequence[RunResult] = (),
    scoring: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.md``, ``results.csv`` and ``results.json`` into ``out_dir``.

    Args:
        out_dir: report folder (created).
        runs: one result per variant and fold.
        title: the Markdown title.
        settings: what was compared (store, split, seeds, budget), listed at the top.
        figures: caption -> PNG file name (relative to ``out_dir``), embedded in order.
        notes: extra lines shown under the tables.
        hd95_convention: how the runs' HD95 was computed (:data:`partseg.metrics.
            HD95_CONVENTIONS`), stated in both files (``hd95_convention`` in the JSON).
        out_of_fold: with K folds, one result per variant and fold scored on that fold's
            validation cases (:mod:`~partseg.report.crossval`): their scores and paired tests
            over every training case, as ``out_of_fold`` in the JSON and a section of the
            Markdown.
        scoring: how the runs were scored (prediction mode, nonzero mask, ...), ``scoring`` in
            the JSON: what tells whether two reports' scores can be compared.

    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(settings or {})
    figures = dict(figures or {})
    write_text(out / "results.csv", _csv_text(results_rows(runs)))
    payload = {
        "title": title,
        "hd95_convention": HD95_CONVENTIONS.check(hd95_convention, key="hd95_convention"),
        "settings": settings,
        **({"scoring": dict(scoring)} if scoring is not None else {}),
        "variants": variants_of(runs),
        "scores": aggregate_scores(runs),
        "costs": aggregate_costs(runs),
        "paired_tests": paired_tests(runs),
        "runs": [r.to_dict() for r in runs],
        "figures": figures,
    }
    if out_of_fold:
        payload["out_of_fold"] = {
            "scores": out_of_fold_scores(out_of_fold),
            "paired_tests": paired_tests(out_of_fold),
            "runs": [r.to_dict() for r in out_of_fold],
        }
    write_text(out / "results.json", json.dumps(payload, indent=2, default=_json_default))
    notes = [*notes, f"HD95 convention: {hd95_statement(hd95_convention)}."]
    text = markdown_report(runs, title, settings, figures, notes, out_of_fold=out_of_fold)
    write_text(out / "report.md", text)
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to results.json")


def markdown_report(
    runs: Sequence[RunResult],
    title: str,
    settings: Mapping[str, Any],
    figures: Mapping[str, str],
    notes: Sequence[str] = (),
    *,
    out_of_fold: Sequence[RunResult] = (),
) -> str:
    """The text of ``report.md``."""
    folds = max((r.fold for r in runs), default=0) + 1
    spread = " (mean ± standard deviation over folds)" if folds > 1 else ""
    parts = [f"# {title}", ""]
    if settings:
        parts += [f"- **{key}**: {value}" for key, value in settings.items()] + [""]
    parts += [f"## Dice per class and region{spread}", "", headline_table(runs), ""]
    parts += ["## Cost per variant", "", cost_table(runs), ""]
    parts += [
        "Memory: `peak_memory_mb` is the CUDA peak allocated during training; on CPU, "
        "`saved_activation_mb` is the size of the tensors one training step keeps for backward. "
        "`seam_index`: mean change of the stitched probabilities across core faces divided by the "
        "mean change inside cores (1.0 = no visible seam), for the grid prediction modes only "
        "(exact and none equal whole-volume inference: no tile faces). `air_voxels`: foreground "
        "voxels scored outside the head (every input channel 0), mean per test case; "
        "`masked_voxels`: the foreground the model predicted there and `evaluation.nonzero_mask` "
        "set to background before scoring (whether the model itself learned the air).",
        "",
    ]
    parts += list(notes) + ([""] if notes else [])
    tests = paired_tests(runs)
    if tests:
        parts += ["## Paired tests between variants (Dice over test cases)", ""]
        parts += [paired_table(tests), "", TEST_NOTE, ""]
    if out_of_fold:
        parts += ["## Cross-validation: out-of-fold Dice (every training case, unseen)", ""]
        parts += [out_of_fold_table(out_of_fold_scores(out_of_fold)), "", OUT_OF_FOLD_NOTE, ""]
        oof_tests = paired_tests(out_of_fold)
        if oof_tests:
            parts += ["### Paired tests over the out-of-fold cases", "", paired_table(oof_tests)]
            parts += [""]
    for variant in variants_of(runs):
        parts += [f"## {variant}: every metric{spread}", "", detail_table(runs, variant), ""]
    for caption, name in figures.items():
        parts += [f"### {caption}", "", f"![{caption}]({name})", ""]
    return "\n".join(parts)


__all__: Sequence[str] = (
    "cost_table",
    "detail_table",
    "fmt",
    "headline_table",
    "markdown_report",
    "out_of_fold_table",
    "paired_table",
    "results_rows",
    "write_report",
)
