"""Segmentation metrics: overlap, surface distance, volume and lesion detection, BraTS regions.

All functions take label arrays in partseg's axis order ((Z, Y, X) or (Y, X)) holding
contiguous class ids, and a voxel ``spacing`` in mm in the same axis order.

Definitions (TP/FP/FN/TN are voxel counts of one binary target):

* Dice = F1 = 2TP / (2TP + FP + FN); Jaccard = TP / (TP + FP + FN);
  precision = TP / (TP + FP); recall = sensitivity = TP / (TP + FN);
  specificity = TN / (TN + FP); F2 = 5TP / (5TP + 4FN + FP);
  volumetric similarity (eq. 7 of the aneurysm paper) = 1 - |FN - FP| / (2TP + FP + FN).
* Surface distances: the surface of a mask is the mask minus its binary erosion (face
  connectivity; voxels on the image border count as surface). For every surface voxel of one
  mask the Euclidean distance in mm to the nearest surface voxel of the other comes from
  ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``. HD is the maximum of both
  directions. HD95 has two conventions in the literature (:data:`HD95_CONVENTIONS`):
  ``max_directed`` (default) is the larger of the two *directed* 95th percentiles (prediction
  -> GT and GT -> prediction), as in MONAI's ``compute_hausdorff_distance(percentile=95)``,
  DeepMind's ``surface-distance`` and the ADAM challenge evaluation; ``pooled`` is the 95th
  percentile of the distances of both directions pooled, as in MedPy's ``hd95``. They differ
  when one direction has far fewer surface voxels: a small false-positive speck far from the
  GT is a large share of the prediction's surface (max_directed sees it) but a tiny share of
  the pooled distances (pooled hides it). The default is ``max_directed`` because it is HD's
  own definition (maximum over both directions) with the 95th percentile in place of the
  maximum, and it is what MONAI and the seed challenges report. The transform runs on the
  bounding box of both masks (plus one voxel), which gives the same distances as the whole
  image, much faster.
* Lesion detection (eq. 2-4 of the aneurysm paper): connected components by
  ``scipy.ndimage.label`` (full connectivity by default: 26-neighbourhood in 3D). A GT lesion is
  *detected* when any predicted voxel overlaps it (hence any predicted component);
  lesion sensitivity = detected / GT lesions; false positives = predicted components that
  overlap no GT voxel (per case; their mean over cases is eq. 3's count per subject);
  lesion PPV = predicted components overlapping GT / predicted components.

Empty masks (BraTS-like, never NaN):

=====================  =======================  =========================================
ground truth           prediction               values
=====================  =======================  =========================================
empty                  empty                    Dice, precision, recall, specificity, F2,
                                                VS, Jaccard, lesion sensitivity and PPV = 1;
                                                HD = HD95 = 0
empty                  not empty                Dice, precision, F2, VS, lesion PPV = 0;
                                                recall, lesion sensitivity = 1 (nothing to
                                                find); HD = HD95 = the image diagonal
not empty              empty                    Dice, recall, F2, VS, lesion sensitivity = 0;
                                                precision, lesion PPV = 0; HD = HD95 = the
                                                image diagonal
=====================  =======================  =========================================

The image diagonal ``sqrt(sum((shape * spacing)^2))`` is the largest possible distance in the
image, e.g. 373.13 mm for BraTS' 240 x 240 x 155 at 1 mm, the value BraTS reports for a missed
or hallucinated region. It is the diagonal of the *original* image: callers scoring a store case
(cropped at ingest) pass :func:`original_diagonal` of its attrs as ``max_distance``, so a missed
class scores 373.13 mm on a BraTS case, not the diagonal of its cropped box.
Specificity with no GT-negative voxel is 1. Summaries report the count of cases with an empty
GT or prediction next to the means, so these conventions stay visible.

Example:
    >>> import numpy as np
    >>> gt = np.zeros((1, 4, 4), np.uint8); gt[0, 1:3, 1:3] = 1
    >>> pred = np.zeros_like(gt); pred[0, 1:3, 1:4] = 1
    >>> result = evaluate_case(pred, gt, ("background", "tumor"), spacing=(1, 1, 1), regions={})
    >>> result["classes"]["tumor"]["dice"]
    0.8
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import ndimage

from partseg.errors import StoreError
from partseg.registry import Registry

__all__ = [
    "BRATS_CLASSES",
    "BRATS_LABEL_MAPPING",
    "BRATS_REGIONS",
    "DEFAULT_HD95",
    "HD95_CONVENTIONS",
    "METRICS",
    "MetricInfo",
    "binary_metrics",
    "confusion_matrix",
    "count_metrics",
    "evaluate_case",
    "image_diagonal",
    "lesion_detection",
    "original_diagonal",
    "regions_for",
    "summarize",
    "surface_distance_metrics",
    "surface_distances",
]

#: Contiguous BraTS class ids: 1 necrotic / non-enhancing core, 2 edema, 3 enhancing tumour.
BRATS_CLASSES: tuple[str, ...] = ("background", "necrotic", "edema", "enhancing")

#: Original BraTS label values -> contiguous class ids (label 3 is unused before BraTS 2023).
BRATS_LABEL_MAPPING: Mapping[int, int] = MappingProxyType({0: 0, 1: 1, 2: 2, 4: 3})

#: The BraTS evaluation regions on contiguous class ids.
BRATS_REGIONS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"whole_tumor": (1, 2, 3), "tumor_core": (1, 3), "enhancing_tumor": (3,)}
)


def regions_for(classes: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The evaluation regions of a label set: the BraTS regions for the BraTS classes, else none.

    Example:
        >>> list(regions_for(BRATS_CLASSES)), regions_for(("background", "aneurysm"))
        (['whole_tumor', 'tumor_core', 'enhancing_tumor'], {})
    """
    return dict(BRATS_REGIONS) if tuple(classes) == BRATS_CLASSES else {}


Metrics = dict[str, float]


@dataclass(frozen=True)
class MetricInfo:
    """What tables need to know about one metric.

    Attributes:
        lower_is_better: True for distances and error counts.
        in_tables: shown in the comparison tables (the per-case files keep every metric).
    """

    lower_is_better: bool = False
    in_tables: bool = False


#: Every metric :func:`evaluate_case` reports per target, in the order tables show them.
METRICS: Registry[MetricInfo] = Registry("metric")
for _name, _info, _help in (
    ("dice", MetricInfo(in_tables=True), "2TP / (2TP + FP + FN)"),
    ("f1", MetricInfo(in_tables=True), "equals Dice"),
    ("f2", MetricInfo(in_tables=True), "5TP / (5TP + 4FN + FP)"),
    ("precision", MetricInfo(in_tables=True), "TP / (TP + FP)"),
    ("recall", MetricInfo(in_tables=True), "TP / (TP + FN)"),
    ("specificity", MetricInfo(in_tables=True), "TN / (TN + FP)"),
    ("hd95", MetricInfo(True, True), "95th-percentile Hausdorff distance, mm"),
    ("hd", MetricInfo(True, True), "Hausdorff distance, mm"),
    ("volumetric_similarity", MetricInfo(in_tables=True), "1 - |FN - FP| / (2TP + FP + FN)"),
    ("lesion_sensitivity", MetricInfo(in_tables=True), "detected / GT lesions"),
    ("lesion_fp", MetricInfo(True, True), "predicted components touching no GT"),
    ("lesion_ppv", MetricInfo(in_tables=True), "components touching GT / components"),
    ("jaccard", MetricInfo(), "TP / (TP + FP + FN)"),
    ("sensitivity", MetricInfo(), "equals recall"),
    ("assd", MetricInfo(lower_is_better=True), "average symmetric surface distance, mm"),
    ("gt_lesions", MetricInfo(), "GT connected components"),
    ("pred_lesions", MetricInfo(), "predicted connected components"),
    ("detected_lesions", MetricInfo(), "GT components touched by the prediction"),
    ("gt_voxels", MetricInfo(), "GT voxels"),
    ("pred_voxels", MetricInfo(), "predicted voxels"),
    ("gt_volume_ml", MetricInfo(), "GT volume, ml"),
    ("pred_volume_ml", MetricInfo(), "predicted volume, ml"),
):
    METRICS.add(_name, _info, help=_help)


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


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


def _ratio(num: float, den: float, empty: float) -> float:
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
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "jaccard": _ratio(tp, tp + fp + fn, 1.0),
        "precision": _ratio(tp, tp + fp, both),
        "recall": _ratio(tp, tp + fn, 1.0),
        "sensitivity": _ratio(tp, tp + fn, 1.0),
        "specificity": _ratio(tn, tn + fp, 1.0),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "f2": _ratio(5 * tp, 5 * tp + 4 * fn + fp, 1.0),
        "volumetric_similarity": 1.0 - _ratio(abs(fn - fp), 2 * tp + fp + fn, 0.0),
    }


# --------------------------------------------------------------------------------------------
# Surface distances
# --------------------------------------------------------------------------------------------


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


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
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
    box = _bbox(pred_mask | gt_mask, margin=1)
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


# --------------------------------------------------------------------------------------------
# Lesion detection
# --------------------------------------------------------------------------------------------


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
        "lesion_sensitivity": _ratio(detected, n_gt, 1.0),
        "lesion_ppv": _ratio(true_components, n_pred, 1.0 if n_gt == 0 else 0.0),
    }


# --------------------------------------------------------------------------------------------
# One target, one case
# --------------------------------------------------------------------------------------------


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
        box = _bbox(union, margin=1)
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


# --------------------------------------------------------------------------------------------
# Summary over cases
# --------------------------------------------------------------------------------------------


def _is_section(value: object) -> bool:
    return isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values())


def _stats(values: list[float]) -> dict[str, float]:
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if finite.size == 0:
        return {"mean": 0.0, "std": 0.0, "median": 0.0, "min": 0.0, "max": 0.0, "n": 0}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "median": float(np.median(finite)),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "n": int(finite.size),
    }


def summarize(per_case: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> dict:
    """Mean, std (population, ddof 0), median, min, max and count per target and metric.

    Every section of the case results of the form name -> {metric: value} (``classes``,
    ``regions``, later ``seam``) is summarised; non-finite values are left out and ``n`` says how
    many cases a statistic covers (never NaN: an empty list gives zeros with ``n = 0``). Each
    target also gets ``n_cases``, ``n_gt_empty`` and ``n_pred_empty`` when the voxel counts are
    present, and the confusion matrices are added up.

    Example:
        >>> a = {"classes": {"tumor": {"dice": 1.0}}}
        >>> b = {"classes": {"tumor": {"dice": 0.5}}}
        >>> summarize([a, b])["classes"]["tumor"]["dice"]["mean"]
        0.75
    """
    cases = list(per_case.values()) if isinstance(per_case, Mapping) else list(per_case)
    summary: dict[str, Any] = {"n_cases": len(cases)}
    section_names = [k for case in cases for k, v in case.items() if _is_section(v)]
    for section in dict.fromkeys(section_names):
        targets = [t for case in cases for t in case.get(section, {})]
        summary[section] = {
            target: _summarize_target(
                [case[section][target] for case in cases if target in case.get(section, {})]
            )
            for target in dict.fromkeys(targets)
        }
    matrices = [np.asarray(c["confusion_matrix"]) for c in cases if "confusion_matrix" in c]
    if matrices and len({m.shape for m in matrices}) == 1:
        summary["confusion_matrix"] = np.sum(matrices, axis=0).tolist()
    return summary


def _summarize_target(entries: list[Mapping[str, float]]) -> dict[str, Any]:
    metrics = [m for entry in entries for m in entry]
    result: dict[str, Any] = {
        metric: _stats([float(e[metric]) for e in entries if metric in e])
        for metric in dict.fromkeys(metrics)
    }
    result["n_cases"] = len(entries)
    if all("gt_voxels" in e and "pred_voxels" in e for e in entries):
        result["n_gt_empty"] = sum(1 for e in entries if e["gt_voxels"] == 0)
        result["n_pred_empty"] = sum(1 for e in entries if e["pred_voxels"] == 0)
    return result
