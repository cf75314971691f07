"""Validation during training: stitched full-volume inference, its Dice and its loss.

:func:`validate_cases` predicts every validation case whole with the stitcher (the same path as
``partseg predict``), scores it with :mod:`partseg.metrics` and computes the training loss on the
stitched probabilities (:func:`validation_loss`), one case in memory at a time.

Example:
    >>> p = np.full((2, 1, 1, 2), 0.5, np.float32)               # (K, Z, Y, X)
    >>> from partseg.losses import build_loss
    >>> round(validation_loss(build_loss("ce"), p, np.ones((1, 1, 2), np.uint8)), 4)
    0.6931
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from partseg.train.rundir import write_run_json

if TYPE_CHECKING:
    from partseg.infer.pipeline import CasePredictor
    from partseg.store.zarrstore import Store


def stitched_logits(
    probs: np.ndarray | torch.Tensor, *, eps: float = 1e-7, sigmoid: bool = False
) -> torch.Tensor:
    """Logits (1, K, *S) equivalent to stitched probabilities (K, *S), for a validation loss.

    With K > 1 channels the probabilities are a softmax and ``log p`` are logits of it
    (``softmax(log p) == p``). With K == 1, or ``sigmoid`` (one sigmoid per region), they are
    sigmoids and the logit ``log p - log(1 - p)`` is returned (``sigmoid(logit(p)) == p``).
    ``p`` is clamped to ``[eps, 1 - eps]`` so no logit is infinite. Computed in float32 on the
    CPU.

    Example:
        >>> p = torch.tensor([[[0.25, 0.5]], [[0.75, 0.5]]])       # (K=2, 1, 2)
        >>> torch.allclose(torch.softmax(stitched_logits(p), 1)[0], p)
        True
    """
    p = torch.as_tensor(probs, dtype=torch.float32)  # (K, *S)
    if sigmoid or p.shape[0] == 1:
        p = p.clamp(eps, 1.0 - eps)
        return (torch.log(p) - torch.log1p(-p))[None]
    return torch.log(p.clamp_min(eps))[None]


def base_loss(loss_fn: nn.Module) -> nn.Module:
    """The configured loss without its :class:`DeepSupervisionLoss` wrapper."""
    from partseg.losses import DeepSupervisionLoss

    return loss_fn.loss if isinstance(loss_fn, DeepSupervisionLoss) else loss_fn


def validation_loss(
    loss_fn: nn.Module, probs: np.ndarray, label: np.ndarray, *, sigmoid: bool = False
) -> float:
    """The training loss of one whole stitched case: probabilities (K, Z, Y, X), label (Z, Y, X).

    The loss sees :func:`stitched_logits` of ``probs`` (``sigmoid``: region probabilities), the
    whole label and a mask of ones. It
    runs under ``torch.no_grad()`` with the loss in eval mode (restored afterwards), so losses
    with epoch statistics (adaptive TverskyCE) do not collect validation values.

    Example:
        >>> from partseg.losses import build_loss
        >>> p = np.full((2, 1, 2, 2), 0.5, np.float32)
        >>> round(validation_loss(build_loss("ce"), p, np.zeros((1, 2, 2), np.uint8)), 4)
        0.6931
    """
    loss_fn = base_loss(loss_fn)
    was_training = loss_fn.training
    logits = stitched_logits(probs, sigmoid=sigmoid)  # (1, K, Z, Y, X)
    target = torch.from_numpy(label.astype(np.int64))[None]  # (1, Z, Y, X)
    mask = torch.ones_like(target, dtype=torch.bool)
    device = next(iter(loss_fn.buffers()), logits).device
    loss_fn.eval()
    try:
        with torch.no_grad():
            value = loss_fn(logits.to(device), target.to(device), mask.to(device))
    finally:
        loss_fn.train(was_training)
    return float(value)


def dice_record(summary: dict[str, Any], *, by: str = "classes") -> dict[str, float]:
    """``val_dice`` (mean over the foreground classes, or over the regions with
    ``by="regions"``: a region-trained model) and per class / region Dice means.

    Example:
        >>> dice_record({"classes": {"tumor": {"dice": {"mean": 0.5}}}})
        {'val_dice_tumor': 0.5, 'val_dice': 0.5}
    """
    record: dict[str, float] = {}
    classes = summary.get("classes", {})
    for name, stats in classes.items():
        record[f"val_dice_{name}"] = stats["dice"]["mean"]
    for name, stats in summary.get("regions", {}).items():
        record[f"val_dice_{name}"] = stats["dice"]["mean"]
    values = [stats["dice"]["mean"] for stats in summary.get(by, {}).values()]
    record["val_dice"] = float(np.mean(values)) if values else 0.0
    return record


def validate_cases(
    predictor: CasePredictor,
    store: Store,
    case_ids: Sequence[str],
    loss_fn: nn.Module,
    *,
    report: Path | None = None,
) -> dict[str, Any]:
    """Whole-case inference of ``case_ids`` and the validation record of the epoch.

    Args:
        predictor: the :class:`~partseg.infer.pipeline.CasePredictor` of the model being
            trained (:meth:`~partseg.infer.pipeline.CasePredictor.from_model`: its partition,
            layout, derived channels, device and precision); it puts the model in eval mode
            and back afterwards.
        store: the store holding the cases.
        case_ids: the validation cases.
        loss_fn: the training loss, for ``val_loss`` (see :func:`validation_loss`).
        report: where to write ``{"cases": per-case metrics, "summary": ...,
            "hd95_convention": ...}`` as JSON (default: not written).

    Returns:
        ``val_dice``, ``val_dice_<class or region>``, ``val_loss`` (mean over cases) and
        ``val_time_s``. A region model (``predictor.regions``) is scored per region and its
        ``val_dice`` is the mean over the regions.
    """
    from partseg.geometry import Box
    from partseg.metrics import (
        DEFAULT_HD95,
        evaluate_case,
        original_diagonal,
        regions_for,
        summarize,
    )

    classes, trained = store.classes, predictor.regions
    regions = trained.evaluation() if trained is not None else regions_for(classes)
    start = time.perf_counter()
    results, losses = {}, []
    for case_id in case_ids:
        case = store[case_id]
        prediction = predictor.predict(case)  # probabilities float32 (K, Z, Y, X), labels
        _, gt = case.read(Box.whole(case.shape))
        diagonal = original_diagonal(case.attrs, case.shape, case.spacing)  # BraTS: 373.13
        results[case_id] = evaluate_case(
            prediction.labels, gt, classes, case.spacing, regions, hd95=DEFAULT_HD95,
            max_distance=diagonal,
        )  # fmt: skip
        losses.append(  # the same probabilities
            validation_loss(loss_fn, prediction.probabilities, gt, sigmoid=trained is not None)
        )
        del prediction, gt  # one case in memory at a time
    summary = summarize(results)
    if report is not None:
        write_run_json(
            report, {"cases": results, "summary": summary, "hd95_convention": DEFAULT_HD95}
        )
    return {
        **dice_record(summary, by="regions" if trained is not None else "classes"),
        "val_loss": float(np.mean(losses)),
        "val_time_s": round(time.perf_counter() - start, 3),
    }


__all__: Sequence[str] = (
    "base_loss",
    "dice_record",
    "stitched_logits",
    "validate_cases",
    "validation_loss",
)
