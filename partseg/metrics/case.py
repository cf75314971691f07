"""Every metric of one target, and of one case per class and per region."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from partseg.metrics.brats import BRATS_REGIONS
from partseg.metrics.catalog import Metrics
from partseg.metrics.distances import (
    DEFAULT_HD95,
    HD95_CONVENTIONS,
    bounding_box,
    image_diagonal,
    surface_distance_metrics,
)
from partseg.metrics.lesions import lesion_detection
from partseg.metrics.overlap import confusion_matrix, count_metrics


def _counts_from_matrix(matrix: np.ndarray, ids: Sequence[int]) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of the union of class ``ids`` from a confusion matrix (GT rows)."""
    inside = np.zeros(matrix.shape[0], dtype=bool)
    inside[list(ids)] = True
    tp = int(matrix[np.ix_(inside, inside)].sum())
    fn = int(matrix[np.ix_(inside, ~inside)].sum())
    fp = int(matrix[np.ix_(~inside, inside)].sum())
    tn = int(matrix.sum()) - tp - fn - fp
    return tp, fp, fn, tn


def _target_metrics(
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    counts: tuple[int, int, int, int],
    spacing: Sequence[float],
    hd95: str = DEFAULT_HD95,
    max_distance: float | None = None,
) -> Metrics:
    tp, fp, fn, tn = counts
    voxel_ml = float(np.prod(spacing)) / 1000.0
    metrics = count_metrics(tp, fp, fn, tn)
    diagonal = image_diagonal(gt_mask.shape, spacing) if max_distance is None else max_distance
    union = pred_mask | gt_mask
    if union.any():  # distances and components only depend on the union's bounding box
        box = bounding_box(union, margin=1)
        pred_mask, gt_mask = pred_mask[box], gt_mask[box]
    metrics.update(surface_distance_metrics(pred_mask, gt_mask, spacing, diagonal, hd95))
    metrics.update(lesion_detection(pred_mask, gt_mask))
    metrics.update(
        {
            "gt_voxels": float(tp + fn),
            "pred_voxels": float(tp + fp),
            "gt_volume_ml": (tp + fn) * voxel_ml,
            "pred_volume_ml": (tp + fp) * voxel_ml,
        }
    )
    return metrics


def binary_metrics(
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    spacing: Sequence[float] | None = None,
    hd95: str = DEFAULT_HD95,
) -> Metrics:
    """Every metric of one binary target (boolean masks of the same shape).

    Example:
        >>> m = binary_metrics(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
        >>> m["dice"], m["hd95"], m["precision"]
        (1.0, 0.0, 1.0)
    """
    pred_mask, gt_mask = np.asarray(pred_mask, bool), np.asarray(gt_mask, bool)
    if pred_mask.shape != gt_mask.shape:
        raise ValueError(f"prediction shape {pred_mask.shape} differs from {gt_mask.shape}")
    spacing = tuple(spacing) if spacing is not None else (1.0,) * gt_mask.ndim
    tp = int(np.count_nonzero(pred_mask & gt_mask))
    fp = int(np.count_nonzero(pred_mask)) - tp
    fn = int(np.count_nonzero(gt_mask)) - tp
    tn = gt_mask.size - tp - fp - fn
    return _target_metrics(pred_mask, gt_mask, (tp, fp, fn, tn), spacing, hd95)


def evaluate_case(
    pred: np.ndarray,
    gt: np.ndarray,
    classes: Sequence[str],
    spacing: Sequence[float] | None = None,
    regions: Mapping[str, Sequence[int]] = BRATS_REGIONS,
    *,
    include_background: bool = False,
    hd95: str = DEFAULT_HD95,
    max_distance: float | None = None,
) -> dict[str, Any]:
    """Metrics of one case per class and per region, plus the confusion matrix.

    Args:
        pred: predicted class ids, (Z, Y, X) or (Y, X).
        gt: ground-truth class ids, same shape.
        classes: class names, index = class id (``classes[0]`` is the background).
        spacing: voxel size in mm per axis (default 1).
        regions: region name -> class ids whose union forms the region
            (:data:`BRATS_REGIONS` by default; ``{}`` for none).
        include_background: also report class 0.
        hd95: the HD95 convention, one of :data:`HD95_CONVENTIONS`.
        max_distance: HD, HD95 and ASSD (mm) of a target present on one side only (default:
            the diagonal of ``gt``; pass :func:`original_diagonal` for a cropped store case).

    Returns:
        ``{"shape", "spacing", "classes": {name: metrics}, "regions": {name: metrics},
        "confusion_matrix": K x K list (rows GT)}``. Further sections of the same form
        (name -> metric dict), such as a later ``"seam"`` section from
        ``seam_metrics(...)``, may be added by callers: :func:`summarize` summarises every
        section of that form.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * gt.ndim
    if len(spacing) != gt.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {gt.ndim}-D image")
    n_classes = len(classes)
    for name, ids in regions.items():
        if not ids or min(ids) < 1 or max(ids) >= n_classes:
            raise ValueError(f"region {name!r} uses class ids {tuple(ids)} outside 1..{n_classes}")
    matrix = confusion_matrix(pred, gt, n_classes)
    first = 0 if include_background else 1
    HD95_CONVENTIONS.check(hd95, key="hd95_convention")
    per_class = {
        classes[c]: _target_metrics(
            pred == c, gt == c, _counts_from_matrix(matrix, [c]), spacing, hd95, max_distance
        )
        for c in range(first, n_classes)
    }
    per_region = {
        name: _target_metrics(
            np.isin(pred, ids),
            np.isin(gt, ids),
            _counts_from_matrix(matrix, ids),
            spacing,
            hd95,
            max_distance,
        )
        for name, ids in regions.items()
    }
    return {
        "shape": list(gt.shape),
        "spacing": list(spacing),
        "classes": per_class,
        "regions": per_region,
        "confusion_matrix": matrix.tolist(),
    }
