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

from partseg.metrics.brats import BRATS_CLASSES, BRATS_LABEL_MAPPING, BRATS_REGIONS, regions_for
from partseg.metrics.case import binary_metrics, evaluate_case
from partseg.metrics.catalog import METRICS, MetricInfo
from partseg.metrics.distances import (
    DEFAULT_HD95,
    HD95_CONVENTIONS,
    image_diagonal,
    original_diagonal,
    surface_distance_metrics,
    surface_distances,
)
from partseg.metrics.lesions import lesion_detection
from partseg.metrics.overlap import confusion_matrix, count_metrics
from partseg.metrics.summary import summarize

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
