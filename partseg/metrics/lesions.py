"""Lesion-wise detection: connected components of prediction and ground truth."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from partseg.metrics.catalog import Metrics
from partseg.metrics.overlap import ratio


def lesion_detection(
    pred_mask: np.ndarray, gt_mask: np.ndarray, connectivity: int | None = None
) -> Metrics:
    """Lesion-wise detection counts (eq. 2-4 of the aneurysm paper).

    Args:
        pred_mask: boolean prediction of one target.
        gt_mask: boolean ground truth, same shape.
        connectivity: neighbourhood of a component, 1 (faces) to ``ndim`` (full, default).

    Returns:
        ``gt_lesions``, ``pred_lesions``, ``detected_lesions`` (GT lesions touched by the
        prediction), ``lesion_fp`` (predicted components touching no GT voxel),
        ``lesion_sensitivity`` (detected / GT lesions; 1 without GT lesions) and ``lesion_ppv``
        (predicted components touching GT / predicted components; 1 when both are empty,
        0 when only the prediction is).

    Example:
        >>> gt = np.array([1, 1, 0, 0, 1, 0, 0], bool)
        >>> pred = np.array([0, 1, 0, 0, 0, 0, 1], bool)
        >>> d = lesion_detection(pred, gt)
        >>> d["detected_lesions"], d["lesion_fp"], d["lesion_sensitivity"], d["lesion_ppv"]
        (1.0, 1.0, 0.5, 0.5)
    """
    structure = ndimage.generate_binary_structure(gt_mask.ndim, connectivity or gt_mask.ndim)
    gt_labels, n_gt = ndimage.label(gt_mask, structure=structure)
    pred_labels, n_pred = ndimage.label(pred_mask, structure=structure)
    detected = np.unique(gt_labels[pred_mask & (gt_labels > 0)]).size
    true_components = np.unique(pred_labels[gt_mask & (pred_labels > 0)]).size
    return {
        "gt_lesions": float(n_gt),
        "pred_lesions": float(n_pred),
        "detected_lesions": float(detected),
        "lesion_fp": float(n_pred - true_components),
        "lesion_sensitivity": ratio(detected, n_gt, 1.0),
        "lesion_ppv": ratio(true_components, n_pred, 1.0 if n_gt == 0 else 0.0),
    }
