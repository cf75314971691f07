"""Evaluation results as text: a Dice/HD95 table for the terminal and CSV rows."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from partseg.evaluation.lesionwise import TABLE_METRICS
from partseg.evaluation.seams import SEAM_TARGET

__all__ = ["csv_rows", "format_table", "to_csv"]

CSV_SUMMARY_STATS = ("mean", "std", "median")
#: Result sections that tables and CSV rows list, in this order (when present).
SECTIONS = ("classes", "regions", "seam", "lesionwise")
#: The lesion-wise regions the terminal table shows (JSON and CSV keep every region).
LESIONWISE_REGIONS = ("wt", "tc", "et")


def _targets(
    cases: Mapping[str, Mapping[str, Any]], sections: Sequence[str]
) -> list[tuple[str, str]]:
    """(section, target) pairs present in any case, sections in the given order."""
    found = {(s, t): None for s in sections for case in cases.values() for t in case.get(s, {})}
    return list(found)


def _fmt(value: float, metric: str) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if not math.isfinite(value):
        return "-"
    if metric == "dice":
        return f"{value:.3f}"
    return f"{value:.2f}" if metric.startswith("hd") else f"{value:.4g}"


def format_table(cases: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    """Dice and HD95 (mm) per case and target, then the mean over cases; seam metrics after.

    Example:
        >>> case = {"classes": {"tumor": {"dice": 0.8, "hd95": 1.0}}}
        >>> summary = {"classes": {"tumor": {"dice": {"mean": 0.8}, "hd95": {"mean": 1.0}}}}
        >>> print(format_table({"a": case}, summary))
        case            tumor
                Dice     HD95
        a      0.800     1.00
        mean   0.800     1.00
    """
    targets = _targets(cases, ("classes", "regions"))
    width = max([len("case"), len("mean"), *(len(c) for c in cases)])
    header = "case".ljust(width) + "".join(f"  {t:>15}" for _, t in targets)
    sub = " " * width + "".join(f"  {'Dice':>6} {'HD95':>8}" for _ in targets)
    lines = [header, sub]
    for case_id, result in cases.items():
        cells = [
            f"  {_fmt(result[s][t]['dice'], 'dice'):>6} {_fmt(result[s][t]['hd95'], 'hd95'):>8}"
            for s, t in targets
        ]
        lines.append(case_id.ljust(width) + "".join(cells))
    means = [
        f"  {_fmt(summary[s][t]['dice']['mean'], 'dice'):>6} "
        f"{_fmt(summary[s][t]['hd95']['mean'], 'hd95'):>8}"
        for s, t in targets
    ]
    lines.append("mean".ljust(width) + "".join(means))
    if "seam" in summary:
        lines += ["", _seam_table(cases, summary, width)]
    if "lesionwise" in summary:
        lines += ["", _lesionwise_table(cases, summary["lesionwise"], width)]
    return "\n".join(lines)


def _lesionwise_table(
    cases: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any], width: int
) -> str:
    """Lesion-wise Dice, HD95 and NSD per case and region (official package), then the mean.

    Example:
        >>> case = {"lesionwise": {"et": {"lesionwise_dsc_mean": 0.5, "lesionwise_hd95_mean": 2,
        ...                               "lesionwise_nsd_mean": 0.75}}}
        >>> stats = {"et": {m: {"mean": v} for m, v in case["lesionwise"]["et"].items()}}
        >>> print(_lesionwise_table({"a": case}, stats, 4))
        lesion-wise                      et
                       Dice     HD95    NSD
        a             0.500     2.00  0.750
        mean          0.500     2.00  0.750
    """
    regions = [r for r in LESIONWISE_REGIONS if r in summary]
    width = max(width, len("lesion-wise"))
    lines = [
        "lesion-wise".ljust(width) + "".join(f"  {r:>22}" for r in regions),
        " " * width + "".join(f"  {'Dice':>6} {'HD95':>8} {'NSD':>6}" for _ in regions),
    ]

    def cells(values: Mapping[str, Any], stat: str | None) -> str:
        got = [values.get(m, math.nan) for m in TABLE_METRICS]
        if stat is not None:
            got = [v[stat] if isinstance(v, Mapping) else v for v in got]
        dice, hd95, nsd = (float(v) for v in got)
        return f"  {_fmt(dice, 'dice'):>6} {_fmt(hd95, 'hd95'):>8} {_fmt(nsd, 'dice'):>6}"

    for case_id, result in cases.items():
        row = "".join(cells(result.get("lesionwise", {}).get(r, {}), None) for r in regions)
        lines.append(case_id.ljust(width) + row)
    lines.append("mean".ljust(width) + "".join(cells(summary[r], "mean") for r in regions))
    return "\n".join(lines)


def _seam_table(
    cases: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any], width: int
) -> str:
    """Every seam metric per case (``-`` for NaN), then the mean over cases."""
    seam = summary["seam"][SEAM_TARGET]
    columns = [(m, max(10, len(m))) for m in seam if isinstance(seam[m], Mapping)]
    lines = ["seam".ljust(width) + "".join(f"  {m:>{w}}" for m, w in columns)]
    for case_id, result in cases.items():
        values = result.get("seam", {}).get(SEAM_TARGET, {})
        cells = [f"  {_fmt(values.get(m, math.nan), m):>{w}}" for m, w in columns]
        lines.append(case_id.ljust(width) + "".join(cells))
    means = [f"  {_fmt(seam[m]['mean'], m):>{w}}" for m, w in columns]
    lines.append("mean".ljust(width) + "".join(means))
    return "\n".join(lines)


def csv_rows(
    cases: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any]
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: one per (case, section, target), then mean/std/median rows.

    The metric columns are every metric of any section (classes, regions, seam); a row leaves
    the metrics its section lacks empty.
    """
    targets = _targets(cases, SECTIONS)
    metrics = list(
        {m: None for s, t in targets for case in cases.values() for m in case.get(s, {}).get(t, {})}
    )
    rows: list[list[Any]] = []
    for case_id, result in cases.items():
        for s, t in targets:
            values = result.get(s, {}).get(t, {})
            rows.append([case_id, s, t, *(values.get(m, "") for m in metrics)])
    for stat in CSV_SUMMARY_STATS:
        for s, t in targets:
            stats = summary[s][t]
            rows.append([stat, s, t, *(stats[m][stat] if m in stats else "" for m in metrics)])
    return ["case", "section", "target", *metrics], rows


def to_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text of a header and rows (``\\n`` line ends).

    Example:
        >>> to_csv(["a", "b"], [[1, 2]])
        'a,b\\n1,2\\n'
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
