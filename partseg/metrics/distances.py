"""Surface distances (HD, HD95 in both conventions, ASSD) and the image diagonal."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from partseg.errors import StoreError
from partseg.metrics.catalog import Metrics
from partseg.registry import Registry


def image_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The largest distance in an image, in mm: the value used when a mask is empty.

    Example:
        >>> round(image_diagonal((155, 240, 240), (1.0, 1.0, 1.0)), 2)
        373.13
    """
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True)))


def original_diagonal(
    attrs: Mapping[str, Any], shape: Sequence[int], spacing: Sequence[float]
) -> float:
    """The diagonal (mm) of the image a store case was cut from, for a missed class's HD95.

    Ingest records ``original_shape`` and ``original_spacing`` (Z, Y, X) in the case attrs; a
    store without them (older partseg) gives the diagonal of ``shape`` x ``spacing``.

    Raises:
        StoreError: the recorded shape or spacing is not positive sizes (a damaged store).

    Example:
        >>> attrs = {"original_shape": [155, 240, 240], "original_spacing": [1.0, 1.0, 1.0]}
        >>> round(original_diagonal(attrs, (138, 171, 137), (1.0, 1.0, 1.0)), 2)
        373.13
    """
    if "original_shape" not in attrs:
        return image_diagonal(shape, spacing)
    try:
        extent = [float(n) for n in attrs["original_shape"]]
        sizes = [float(s) for s in attrs.get("original_spacing", spacing)]
    except (TypeError, ValueError):
        extent, sizes = [], []
    values = extent + sizes
    if (
        len(extent) != len(sizes)
        or not extent
        or not all(math.isfinite(v) and v > 0 for v in values)
    ):
        raise StoreError(
            f"case {attrs.get('case_id', '?')!r}: its original_shape "
            f"{attrs.get('original_shape')!r} / original_spacing "
            f"{attrs.get('original_spacing')!r} are not positive sizes; re-ingest the case"
        )
    return image_diagonal(extent, sizes)


def bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of a non-empty mask, grown by ``margin`` voxels, clipped to the array."""
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        lo, hi = int(hits[0]) - margin, int(hits[-1]) + 1 + margin
        slices.append(slice(max(lo, 0), min(hi, mask.shape[axis])))
    return tuple(slices)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (or on the array border)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each prediction surface voxel to the GT surface, and back.

    Both masks must be non-empty. The arrays are cropped to the bounding box of their union
    plus one voxel (so the erosion sees the same neighbourhoods) before the distance transform;
    voxels on the border of the original image stay surface voxels.

    Returns:
        ``(pred_to_gt, gt_to_pred)``, 1-D float64 arrays.
    """
    box = bounding_box(pred_mask | gt_mask, margin=1)
    pred_mask, gt_mask = pred_mask[box], gt_mask[box]
    # the crop keeps the image-border rule: an image-border voxel is still at the crop border
    pred_surface, gt_surface = _surface(pred_mask), _surface(gt_mask)
    sampling = tuple(float(s) for s in spacing)
    to_gt = ndimage.distance_transform_edt(~gt_surface, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)
    return to_gt[pred_surface], to_pred[gt_surface]


def _hd95_max_directed(to_gt: np.ndarray, to_pred: np.ndarray) -> float:
    return float(max(np.percentile(to_gt, 95), np.percentile(to_pred, 95)))


def _hd95_pooled(to_gt: np.ndarray, to_pred: np.ndarray) -> float:
    return float(np.percentile(np.concatenate([to_gt, to_pred]), 95))


#: How HD95 combines the two directed surface distances (see the module docstring).
HD95_CONVENTIONS: Registry[Callable[[np.ndarray, np.ndarray], float]] = Registry("HD95 convention")
HD95_CONVENTIONS.add(
    "max_directed",
    _hd95_max_directed,
    help="max of the two directed 95th percentiles (MONAI, DeepMind surface-distance, ADAM)",
)
HD95_CONVENTIONS.add(
    "pooled",
    _hd95_pooled,
    help="95th percentile of both directions' distances pooled (MedPy hd95)",
)
#: The HD95 convention used unless one is asked for (reason in the module docstring).
DEFAULT_HD95 = "max_directed"


def surface_distance_metrics(
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    spacing: Sequence[float],
    max_distance: float | None = None,
    hd95: str = DEFAULT_HD95,
) -> Metrics:
    """HD, HD95 and average symmetric surface distance (ASSD), in mm.

    Empty masks: both empty -> 0; one empty -> ``max_distance`` (default: the
    :func:`image_diagonal` of the masks).

    Args:
        pred_mask: boolean prediction.
        gt_mask: boolean ground truth, same shape.
        spacing: voxel size in mm per axis.
        max_distance: the value of every distance when exactly one mask is empty.
        hd95: one of :data:`HD95_CONVENTIONS`.

    Example:
        >>> a = np.zeros((1, 1, 6), bool); a[0, 0, 0] = True
        >>> b = np.zeros((1, 1, 6), bool); b[0, 0, 3] = True
        >>> surface_distance_metrics(a, b, spacing=(1.0, 1.0, 2.0))["hd"]
        6.0
    """
    combine = HD95_CONVENTIONS.get(hd95, key="hd95_convention")
    pred_any, gt_any = bool(pred_mask.any()), bool(gt_mask.any())
    if not pred_any and not gt_any:
        return {"hd": 0.0, "hd95": 0.0, "assd": 0.0}
    if not pred_any or not gt_any:
        worst = image_diagonal(gt_mask.shape, spacing) if max_distance is None else max_distance
        return {"hd": worst, "hd95": worst, "assd": worst}
    to_gt, to_pred = surface_distances(pred_mask, gt_mask, spacing)
    pooled = np.concatenate([to_gt, to_pred])
    return {
        "hd": float(pooled.max()),
        "hd95": combine(to_gt, to_pred),
        "assd": float(pooled.mean()),
    }
