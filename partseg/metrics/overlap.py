"""Overlap and volume metrics from voxel counts: the confusion matrix and TP/FP/FN/TN ratios."""

from __future__ import annotations

import numpy as np

from partseg.metrics.catalog import Metrics


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, n_classes: int) -> np.ndarray:
    """Voxel counts (K, K): row = ground-truth class, column = predicted class.

    Example:
        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    p = pred.astype(np.int64, copy=False).ravel()
    g = gt.astype(np.int64, copy=False).ravel()
    if p.size and (min(p.min(), g.min()) < 0 or max(p.max(), g.max()) >= n_classes):
        raise ValueError(f"class ids must lie in [0, {n_classes}), got {p.max()} / {g.max()}")
    counts = np.bincount(g * n_classes + p, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def ratio(num: float, den: float, empty: float) -> float:
    """``num / den``, or ``empty`` when ``den`` is 0 (the empty-mask conventions)."""
    return float(num) / float(den) if den > 0 else float(empty)


def count_metrics(tp: int, fp: int, fn: int, tn: int) -> Metrics:
    """Overlap and volume metrics from voxel counts, with the empty-mask conventions.

    Example:
        >>> count_metrics(tp=3, fp=1, fn=1, tn=5)["dice"]
        0.75
    """
    gt_empty, pred_empty = tp + fn == 0, tp + fp == 0
    both = 1.0 if gt_empty and pred_empty else 0.0
    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "jaccard": ratio(tp, tp + fp + fn, 1.0),
        "precision": ratio(tp, tp + fp, both),
        "recall": ratio(tp, tp + fn, 1.0),
        "sensitivity": ratio(tp, tp + fn, 1.0),
        "specificity": ratio(tn, tn + fp, 1.0),
        "f1": ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "f2": ratio(5 * tp, 5 * tp + 4 * fn + fp, 1.0),
        "volumetric_similarity": 1.0 - ratio(abs(fn - fp), 2 * tp + fp + fn, 0.0),
    }
