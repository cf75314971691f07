"""Evaluating cases: one pair of label arrays, every matched case, and whole folders or stores."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partseg.errors import ConfigError, InputError
from partseg.evaluation.labels import LabelPolicy, make_policy
from partseg.evaluation.lesionwise import LesionwiseRun
from partseg.evaluation.seams import SeamSources, check_seam_files, seam_section
from partseg.evaluation.sides import (
    Side,
    check_order,
    match_cases,
    max_distance,
    open_side,
    pair_single_files,
    read_labels,
)
from partseg.evaluation.warn import Warn, default_warn
from partseg.metrics import DEFAULT_HD95, HD95_CONVENTIONS, binary_metrics, evaluate_case, summarize

__all__ = ["evaluate_all", "evaluate_folders", "evaluate_pair", "finalize_case"]


def evaluate_pair(
    case_id: str,
    pred: Side,
    gt: Side,
    policy: LabelPolicy,
    *,
    seams: SeamSources | None = None,
    warn: Warn | None = None,
    hd95: str = DEFAULT_HD95,
    lesionwise: LesionwiseRun | None = None,
) -> tuple[dict[str, Any], int]:
    """Metrics of one case (classes named by id) and the number of classes it was run with;
    ``lesionwise`` also gets the case's class ids (the official BraTS evaluation)."""
    pred_raw, pred_spacing = read_labels(pred, case_id)
    gt_raw, spacing = read_labels(gt, case_id)
    if pred_raw.shape != gt_raw.shape:
        raise InputError(
            case_id,
            f"{pred.where(case_id)} vs {gt.where(case_id)}",
            f"prediction shape {pred_raw.shape} differs from ground truth shape {gt_raw.shape} "
            "(axes Z, Y, X)",
            "evaluate predictions exported in the geometry of the ground truth",
        )
    if not np.allclose(pred_spacing, spacing, rtol=1e-3, atol=1e-4):
        (warn or default_warn)(
            f"case {case_id!r}: prediction spacing {pred_spacing} differs from ground truth "
            f"{spacing}; using the ground truth's"
        )
    policy.observe(case_id, pred_raw, pred.where(case_id), gt_raw)
    pred_ids, gt_ids = policy.to_class_ids(
        case_id,
        (pred_raw, pred.is_nifti, pred.where(case_id)),
        (gt_raw, gt.is_nifti, gt.where(case_id)),
    )
    n_classes = policy.n_classes()
    top = max(int(pred_ids.max()), int(gt_ids.max()))
    if top >= n_classes:
        raise InputError(
            case_id,
            gt.where(case_id),
            f"class id {top} has no name in the {n_classes} classes {policy.class_names}",
            "pass --classes with a name for every class id",
        )
    regions = policy.regions()
    n_classes = max(n_classes, 4) if regions else n_classes
    if lesionwise is not None:
        lesionwise.add(case_id, pred_ids, gt_ids, spacing)
    names = [str(i) for i in range(n_classes)]
    diagonal = max_distance(gt, case_id)  # a store case: the original image's, not the crop's
    result = evaluate_case(
        pred_ids, gt_ids, names, spacing, regions=regions, hd95=hd95, max_distance=diagonal
    )
    result = {"pred": pred.where(case_id), "gt": gt.where(case_id), **result}
    if seams is not None:
        result["seam"] = seam_section(case_id, seams)
    return result, n_classes


def finalize_case(
    result: Mapping[str, Any], names: Sequence[str], regions: Mapping[str, Any]
) -> dict[str, Any]:
    """Pad a case to all classes (absent classes are 'both empty'), name them, drop regions."""
    n = len(names)
    by_id = result["classes"]
    if len(by_id) + 1 < n:
        empty = np.zeros((1,) * len(result["shape"]), dtype=bool)
        both_empty = binary_metrics(empty, empty, result["spacing"])
        by_id = {**by_id, **{str(i): dict(both_empty) for i in range(len(by_id) + 1, n)}}
    matrix = np.zeros((n, n), dtype=np.int64)
    old = np.asarray(result["confusion_matrix"], dtype=np.int64)
    matrix[: min(n, old.shape[0]), : min(n, old.shape[1])] = old[:n, :n]
    out = dict(result)
    out["classes"] = {names[int(i)]: metrics for i, metrics in by_id.items() if int(i) < n}
    out["regions"] = {k: v for k, v in result["regions"].items() if k in regions}
    out["confusion_matrix"] = matrix.tolist()
    return out


def evaluate_all(
    pred: Side,
    gt: Side,
    case_ids: Iterable[str],
    policy: LabelPolicy,
    *,
    seams: SeamSources | None = None,
    warn: Warn | None = None,
    hd95: str = DEFAULT_HD95,
    lesionwise: LesionwiseRun | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate every case (one case in memory at a time), then name classes and regions."""
    raw = {}
    for case_id in case_ids:
        if lesionwise is not None:
            _check_brats_labels(policy, final=False)
        raw[case_id] = evaluate_pair(
            case_id, pred, gt, policy, seams=seams, warn=warn, hd95=hd95, lesionwise=lesionwise
        )[0]
    policy.check_values()
    if lesionwise is not None:
        _check_brats_labels(policy, final=True)
    names, regions = policy.final_names(), policy.final_regions()
    return {case_id: finalize_case(result, names, regions) for case_id, result in raw.items()}


def _check_brats_labels(policy: LabelPolicy, final: bool) -> None:
    """Lesion-wise metrics need BraTS classes (1 necrotic, 2 edema, 3 enhancing)."""
    decided = final or policy.mapping is not None or not policy.brats_possible
    if decided and not policy.is_brats:
        names = policy.final_names() if final else policy.class_names
        raise ConfigError(
            f"--brats-lesionwise needs BraTS labels (background, necrotic, edema, enhancing), "
            f"but the classes are {names} ({policy.convention_description()})"
        )


def _add_lesionwise(
    run: LesionwiseRun, cases: dict[str, dict[str, Any]], missing: list[str]
) -> dict[str, Any]:
    """Put the official per-case numbers into the cases; the official summary, the settings."""
    per_case, summary = run.finish(missing)
    for case_id, result in cases.items():
        result["lesionwise"] = per_case[case_id]
    return {**run.versions, "missing_cases": missing, "summary": summary}


def _seam_sources(
    seams: str | os.PathLike | None, seam_reference: str | os.PathLike | None
) -> SeamSources | None:
    if seams is None:
        if seam_reference is not None:
            raise ConfigError(
                "--seam-reference needs --seams: the folder of the partitioned prediction's "
                "probabilities to compare with the reference"
            )
        return None
    for folder in (seams, seam_reference):
        if folder is not None and not Path(folder).is_dir():
            raise InputError(
                "-",
                folder,
                "the probability folder does not exist",
                "pass the --out folder of partseg predict --save-probabilities "
                "--probabilities-format zarr",
            )
    return SeamSources(Path(seams), Path(seam_reference) if seam_reference else None)


def evaluate_folders(
    pred: str | os.PathLike,
    gt: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    regions: str = "auto",
    labels_map: Mapping[int, int] | str | None = None,
    pred_labels_map: Mapping[int, int] | str | None = None,
    allow_missing: bool = False,
    seams: str | os.PathLike | None = None,
    seam_reference: str | os.PathLike | None = None,
    warn: Warn | None = None,
    hd95: str = DEFAULT_HD95,
    brats_lesionwise: str | None = None,
) -> dict[str, Any]:
    """Evaluate predictions against ground truth: per-case metrics and their summary.

    Args:
        pred: predicted labels: a NIfTI file, a folder of them, or a partseg store.
        gt: ground-truth labels, in the same forms.
        classes: class names by class id, background first (default: the store's classes, the
            BraTS names for BraTS labels, else ``background, class_1, ...``).
        regions: ``"auto"`` (BraTS regions for BraTS labels), ``"brats"`` or ``"none"``.
        labels_map: original label value -> class id for NIfTI files, as a mapping or
            ``"0:0,1:1,2:2,4:3"`` (default: the ground truth's convention: its layout's labels
            (BraTS 2017-2021: 4 -> 3; BraTS 2023: identity), ``dataset.json`` or store; else a
            store's mapping on the other side; else BraTS 4 -> 3 when detected, else identity).
        pred_labels_map: the same for the prediction's NIfTI files when they use other values
            than the ground truth (default: the ground truth's mapping). A prediction whose
            values do not fit the ground truth's label set is an error naming both sets.
        allow_missing: skip cases found on one side only (with a warning) instead of raising.
        seams: folder of ``<case>_probabilities.zarr`` from ``partseg predict``: adds a
            ``"seam"`` section with ``seam_index`` to each case.
        seam_reference: the same folder from ``--partition none``: adds ``max_abs``,
            ``mean_abs`` and ``changed_label_share`` to the seam section (needs ``seams``).
        warn: receives warning texts (default: :func:`warnings.warn`).
        hd95: the HD95 convention (:data:`partseg.metrics.HD95_CONVENTIONS`): ``max_directed``
            (default) or ``pooled``.
        brats_lesionwise: a config of the official BraTS evaluation package (``"gli"``, ...;
            needs the ``brats`` extra): adds its lesion-wise numbers per case (section
            ``lesionwise``: region -> column) and their summary (:mod:`~partseg.evaluation.\
lesionwise`); ground-truth cases without a prediction (``allow_missing``) enter that summary
            with the package's penalties.

    Returns:
        ``{"pred", "gt", "classes", "regions", "label_mapping", "label_convention",
        "hd95_convention", "seams", "seam_reference", "skipped", "brats_lesionwise" (package
        versions, config and missing cases; None without it), "summary", "cases"}``:
        ``cases`` maps case id -> the :func:`partseg.metrics.evaluate_case` result (plus
        ``pred``/``gt`` file names and the optional ``seam`` section); ``summary`` is
        :func:`partseg.metrics.summarize` of them.

    Raises:
        InputError: unreadable or mismatched cases, files or shapes, label sets that disagree,
            or PRED and GT given the wrong way round (the message names them).
        ConfigError: inconsistent options.

    Example:
        >>> import tempfile, nibabel as nib
        >>> root = Path(tempfile.mkdtemp())
        >>> gt = np.zeros((2, 4, 4), np.uint8); gt[0, 1:3, 1:3] = 1  # (Z, Y, X)
        >>> pred = gt.copy(); pred[0, 1:3, 3] = 1                     # 2 false positives
        >>> nib.save(nib.Nifti1Image(gt.T, np.eye(4)), str(root / "a_seg.nii.gz"))
        >>> nib.save(nib.Nifti1Image(pred.T, np.eye(4)), str(root / "a_pred.nii.gz"))
        >>> report = evaluate_folders(root / "a_pred.nii.gz", root / "a_seg.nii.gz")
        >>> report["classes"], report["cases"]["a"]["classes"]["class_1"]["dice"]
        (['background', 'class_1'], 0.8)
    """
    HD95_CONVENTIONS.check(hd95, key="--hd95")
    sources = _seam_sources(seams, seam_reference)
    lesionwise = LesionwiseRun(brats_lesionwise) if brats_lesionwise is not None else None
    pred_side, gt_side = open_side(pred, "PRED"), open_side(gt, "GT")
    check_order(pred_side, gt_side)
    pred_side = pair_single_files(pred_side, gt_side)
    case_ids, skipped = match_cases(pred_side, gt_side, allow_missing, warn)
    if sources is not None:
        check_seam_files(sources, case_ids)
    policy = make_policy(
        pred_side,
        gt_side,
        classes=classes,
        labels_map=labels_map,
        pred_labels_map=pred_labels_map,
        regions=regions,
    )
    cases = evaluate_all(
        pred_side, gt_side, case_ids, policy, seams=sources, warn=warn, hd95=hd95,
        lesionwise=lesionwise,
    )  # fmt: skip
    official = None
    if lesionwise is not None:
        gt_only = [c for c in skipped if c in set(gt_side.case_ids)]
        official = _add_lesionwise(lesionwise, cases, gt_only)
    summary = summarize(cases)
    if official is not None:
        summary["lesionwise"] = official.pop("summary")  # the official statistics, not ours
    return {
        "pred": os.fspath(pred),
        "gt": os.fspath(gt),
        "classes": policy.final_names(),
        "regions": {k: list(v) for k, v in policy.final_regions().items()},
        "label_mapping": policy.mapping_description(),
        "label_convention": policy.convention_description(),
        "hd95_convention": hd95,
        "seams": os.fspath(seams) if seams is not None else None,
        "seam_reference": os.fspath(seam_reference) if seam_reference is not None else None,
        "skipped": skipped,
        "brats_lesionwise": official,
        "summary": summary,
        "cases": cases,
    }
