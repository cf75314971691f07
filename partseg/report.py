"""Comparison reports: tables (Markdown, CSV, JSON) and PNG plots of several trained variants.

The report is written from plain data so it can be rebuilt without retraining: one
:class:`RunResult` per trained variant and fold (scores per class/region averaged over the test
cases, costs such as parameters, memory and time per epoch, the confusion matrix and the
training history). :func:`aggregate_scores` and :func:`aggregate_costs` reduce folds to mean and
spread (sample standard deviation over folds); :func:`write_report` writes ``report.md``,
``results.csv`` and ``results.json``; the ``plot_*`` functions draw with matplotlib's Agg backend
(no display needed).

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

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partseg.atomic import atomic_path, write_text
from partseg.metrics import DEFAULT_HD95, HD95_CONVENTIONS, METRICS

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
    "epoch_seconds",
    "train_seconds",
    "predict_seconds",
    "seam_index",
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
    """

    variant: str
    fold: int
    scores: Mapping[str, Mapping[str, float | None]]
    costs: Mapping[str, float | None] = field(default_factory=dict)
    confusion: tuple[tuple[int, ...], ...] | None = None
    history: tuple[Mapping[str, Any], ...] = ()
    run_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse: :meth:`from_dict`)."""
        data = asdict(self)
        data["scores"] = {t: dict(m) for t, m in self.scores.items()}
        data["costs"] = dict(self.costs)
        data["history"] = [dict(r) for r in self.history]
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
        )


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def _finite(values: Iterable[Any]) -> list[float]:
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
    finite = _finite(values)
    if not finite:
        return None, None
    mean = float(np.mean(finite))
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return mean, std


def ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    """``names`` sorted by their position in ``order``, unknown names last, alphabetically."""
    unique = set(names)
    known = [n for n in order if n in unique]
    return known + sorted(unique - set(order))


def _variants(runs: Sequence[RunResult]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        seen.setdefault(run.variant, None)
    return list(seen)


def _targets(runs: Sequence[RunResult]) -> list[str]:
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
    for variant in _variants(runs):
        mine = [r for r in runs if r.variant == variant]
        for target in _targets(mine):
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
    for variant in _variants(runs):
        mine = [r for r in runs if r.variant == variant]
        row: dict[str, Any] = {"variant": variant, "folds": len(mine)}
        for key in ordered({k for r in mine for k in r.costs}, COST_ORDER):
            row[key], row[f"{key}_std"] = mean_std(r.costs.get(key) for r in mine)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


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
    targets = _targets(runs)
    body = []
    for variant in _variants(runs):
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
    digits = {"parameters": 0, "peak_memory_mb": 1, "saved_activation_mb": 1, "epoch_seconds": 1}
    body = [
        [r["variant"], *(fmt(r.get(k), r.get(f"{k}_std"), digits=digits.get(k, 3)) for k in keys)]
        for r in rows
    ]
    return _markdown_table(["variant", *keys], body)


def write_report(
    out_dir: str | os.PathLike,
    runs: Sequence[RunResult],
    *,
    title: str = "partseg comparison",
    settings: Mapping[str, Any] | None = None,
    figures: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    hd95_convention: str = DEFAULT_HD95,
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
        "variants": _variants(runs),
        "scores": aggregate_scores(runs),
        "costs": aggregate_costs(runs),
        "runs": [r.to_dict() for r in runs],
        "figures": figures,
    }
    write_text(out / "results.json", json.dumps(payload, indent=2, default=_json_default))
    notes = [*notes, f"HD95 convention: {hd95_statement(hd95_convention)}."]
    write_text(out / "report.md", markdown_report(runs, title, settings, figures, notes))
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
        "mean change inside cores (1.0 = no visible seam).",
        "",
    ]
    parts += list(notes) + ([""] if notes else [])
    for variant in _variants(runs):
        parts += [f"## {variant}: every metric{spread}", "", detail_table(runs, variant), ""]
    for caption, name in figures.items():
        parts += [f"### {caption}", "", f"![{caption}]({name})", ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return path


#: Panels of :func:`plot_loss_curves`: title and record key.
CURVES = (
    ("training loss", "train_loss"),
    ("validation loss", "val_loss"),
    ("validation Dice (stitched, mean over classes)", "val_dice"),
)


def plot_loss_curves(
    histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    path: str | os.PathLike,
    *,
    curves: Sequence[tuple[str, str]] = CURVES,
) -> Path:
    """Per-epoch curves, one colour per variant, one line per fold, one panel per record key.

    Panels whose key no record holds are left out (the training loss panel is always drawn).

    Args:
        histories: variant -> one record list per fold; records hold ``epoch`` and the keys of
            ``curves`` (``metrics.jsonl`` lines of the runs).
        path: the PNG to write.
        curves: (panel title, record key) pairs.
    """
    plt = _pyplot()
    records = [r for folds in histories.values() for rs in folds for r in rs]
    shown = [c for i, c in enumerate(curves) if i == 0 or any(c[1] in r for r in records)]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (variant, folds) in enumerate(histories.items()):
        colour = colours[i % len(colours)]
        for j, fold_records in enumerate(folds):
            for ax, (_, key) in zip(axes[0], shown, strict=True):
                points = [
                    (float(r["epoch"]), float(r[key]))  # epochs count from 1
                    for r in fold_records
                    if r.get(key) is not None and "epoch" in r
                ]
                if points:
                    x, y = zip(*points, strict=True)
                    label = variant if j == 0 else None
                    ax.plot(x, y, color=colour, marker="." if len(x) < 30 else None, label=label)
    for ax, (title, key) in zip(axes[0], shown, strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(fig, path)


def plot_class_distribution(
    counts: Mapping[str, Sequence[float]], classes: Sequence[str], path: str | os.PathLike
) -> Path:
    """Voxels per class of each set (e.g. ``{"train": [...], "test": [...]}``), log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(classes) + 2), 4))
    width = 0.8 / max(1, len(counts))
    x = np.arange(len(classes))
    for i, (name, values) in enumerate(counts.items()):
        values = np.maximum(np.asarray(values, dtype=float), 0.5)  # log scale: show empty as 0.5
        bars = ax.bar(x + (i - (len(counts) - 1) / 2) * width, values, width, label=name)
        total = float(np.sum(values))
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                f"{100 * value / total:.2g}%",
                (bar.get_x() + bar.get_width() / 2, value),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_yscale("log")
    ax.set_xticks(x, list(classes))
    ax.set_ylabel("voxels (log scale)")
    ax.set_title("class distribution")
    ax.legend()
    return _save(fig, path)


def plot_confusion_matrices(
    matrices: Mapping[str, np.ndarray], classes: Sequence[str], path: str | os.PathLike
) -> Path:
    """One panel per variant: row-normalised confusion matrix (recall on the diagonal)."""
    plt = _pyplot()
    n = max(1, len(matrices))
    size = 1.0 + 0.9 * len(classes)
    fig, axes = plt.subplots(1, n, figsize=(size * n + 2, size + 0.8), squeeze=False)
    for panel, (ax, (variant, matrix)) in enumerate(zip(axes[0], matrices.items(), strict=False)):
        matrix = np.asarray(matrix, dtype=float)
        rows = matrix.sum(axis=1, keepdims=True)
        norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for (i, j), value in np.ndenumerate(norm):
            colour = "white" if value > 0.5 else "black"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=colour, fontsize=8)
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, list(classes), rotation=45, ha="right")
        ax.set_yticks(ticks, list(classes) if panel == 0 else [])
        ax.set_xlabel("predicted")
        if panel == 0:
            ax.set_ylabel("ground truth")
        ax.set_title(variant)
    return _save(fig, path)


def label_colours(num_classes: int) -> np.ndarray:
    """(K, 4) RGBA colours: background transparent, classes in distinct opaque colours."""
    palette = np.array(
        [
            [0.0, 0.0, 0.0, 0.0],
            [0.90, 0.10, 0.10, 1.0],
            [0.10, 0.75, 0.20, 1.0],
            [0.15, 0.35, 0.95, 1.0],
            [0.95, 0.80, 0.10, 1.0],
            [0.80, 0.20, 0.85, 1.0],
            [0.10, 0.85, 0.85, 1.0],
        ]
    )
    return palette[np.arange(num_classes) % len(palette)]


def plot_overlays(
    images: Sequence[np.ndarray],
    labels: Mapping[str, Sequence[np.ndarray]],
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    row_titles: Sequence[str] = (),
    alpha: float = 0.45,
) -> Path:
    """A grid of slices: one row per slice, columns ``image``, then one per label map.

    Args:
        images: one (Y, X) grey image per row.
        labels: column title (``"ground truth"``, each variant) -> one (Y, X) label map per row.
        classes: class names (legend), index = class id.
        path: the PNG to write.
        row_titles: text at the left of each row, e.g. ``"case_003 z=24"``.
        alpha: opacity of the label colours over the grey image.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    colours = label_colours(len(classes))
    ncols = 1 + len(labels)
    nrows = max(1, len(images))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.4 * nrows), squeeze=False)
    for i, image in enumerate(images):
        grey = _normalise(image)
        for j, ax in enumerate(axes[i]):
            ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
            if j > 0:
                column = list(labels.values())[j - 1]
                rgba = colours[np.asarray(column[i], dtype=np.int64)].copy()
                rgba[..., 3] *= alpha
                ax.imshow(rgba, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("image" if j == 0 else list(labels)[j - 1], fontsize=9)
        if i < len(row_titles):
            axes[i][0].set_ylabel(row_titles[i], fontsize=8)
    handles = [Patch(color=colours[k], label=name) for k, name in enumerate(classes) if k > 0]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    return _save(fig, path)


def _normalise(image: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] between the 1st and 99th percentile (robust to outliers)."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    if hi <= lo:
        return np.zeros_like(image)
    return np.clip((image - lo) / (hi - lo), 0, 1)
