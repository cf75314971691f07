"""PNG plots of a comparison, drawn with matplotlib's Agg backend (no display needed).

Loss curves per epoch, the class distribution, confusion matrices, overlays of predictions on
the same test slices, and the per-case distribution of a metric per variant and target (box and
strip plot: the spread a mean hides, and the pairs of the paired tests).

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cases.png"
    >>> plot_case_distribution({"2d": {"WT": {"c1": 0.5, "c2": 0.7}},
    ...                         "3d": {"WT": {"c1": 0.8, "c2": 0.9}}}, path).is_file()
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partseg.atomic import atomic_path


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


def plot_case_distribution(
    scores: Mapping[str, Mapping[str, Mapping[str, float]]],
    path: str | os.PathLike,
    *,
    metric: str = "Dice",
    targets: Sequence[str] | None = None,
) -> Path:
    """One panel per target: a box per variant over its per-case values, and the cases as dots.

    Dots of the same case are joined across variants by a faint line, so paired differences
    show (the pairs of :mod:`partseg.report.stats`).

    Args:
        scores: variant -> target -> case -> value (:func:`~partseg.report.results.
            case_scores`).
        path: the PNG to write.
        metric: the y-axis label.
        targets: the panels, in order (default: every target, in first-seen order).
    """
    plt = _pyplot()
    variants = list(scores)
    if targets is None:
        targets = list(dict.fromkeys(t for v in scores.values() for t in v))
    n = max(1, len(targets))
    fig, axes = plt.subplots(1, n, figsize=(max(3.0, 0.9 * len(variants) + 1.5) * n, 3.8),
                             squeeze=False)  # fmt: skip
    rng = np.random.default_rng(0)  # the same jitter on every redraw
    for ax, target in zip(axes[0], targets, strict=False):
        columns = [scores[v].get(target, {}) for v in variants]
        boxes = [list(c.values()) for c in columns]
        positions = np.arange(1, len(variants) + 1)
        shown = [i for i, b in enumerate(boxes) if b]
        if shown:
            ax.boxplot([boxes[i] for i in shown], positions=positions[shown], widths=0.5,
                       showfliers=False)  # fmt: skip
        cases = sorted({c for column in columns for c in column})
        jitter = {c: float(rng.uniform(-0.12, 0.12)) for c in cases}
        for case in cases:
            xs = [
                p + jitter[case] for p, col in zip(positions, columns, strict=True) if case in col
            ]
            ys = [col[case] for col in columns if case in col]
            ax.plot(xs, ys, color="grey", alpha=0.3, linewidth=0.8)
            ax.scatter(xs, ys, s=14, zorder=3)
        ax.set_xticks(positions, variants, rotation=30, ha="right")
        ax.set_title(target)
        if metric.lower() == "dice":
            ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel(f"{metric} per test case")
    return _save(fig, path)


__all__: Sequence[str] = (
    "CURVES",
    "label_colours",
    "plot_case_distribution",
    "plot_class_distribution",
    "plot_confusion_matrices",
    "plot_loss_curves",
    "plot_overlays",
)
