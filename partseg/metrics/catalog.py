"""The metrics partseg reports (:data:`METRICS`) and what tables need to know about each."""

from __future__ import annotations

from dataclasses import dataclass

from partseg.registry import Registry

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
