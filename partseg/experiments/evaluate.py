"""Scoring a predictor on the held-out test cases, with the overlay slices; cached per run."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partseg.atomic import atomic_path, write_json
from partseg.errors import ConfigError
from partseg.experiments.config import EvaluationSpec
from partseg.experiments.predictors import Predictor
from partseg.progress import Progress

#: Part of every cached evaluation's key: raised when a scoring run records something new
#: (2: ``masked_voxels``), so evaluations cached before are scored again, not reused without it.
EVALUATION_VERSION = 2


@dataclass(frozen=True)
class OverlaySlice:
    """One slice of the overlay figure: case and Z index."""

    case_id: str
    z: int


def overlay_slices(store: Any, test: Sequence[str], count: int) -> list[OverlaySlice]:
    """The ``count`` slices shown: per test case in turn, the Z slice with most foreground."""
    picks: list[OverlaySlice] = []
    for case_id in list(test)[: max(count, 0)]:
        area = _foreground_per_slice(store[case_id])
        picks.append(OverlaySlice(case_id, int(np.argmax(area))))
    while len(picks) < count and picks:  # fewer test cases than slices: more slices per case
        first = picks[len(picks) % len(test)]
        area = _foreground_per_slice(store[first.case_id])
        for p in picks:
            if p.case_id == first.case_id:
                area[max(0, p.z - 2) : p.z + 3] = -1
        picks.append(OverlaySlice(first.case_id, int(np.argmax(area))))
    return picks


def whole_label(case: Any) -> np.ndarray:
    """The ground truth of a whole stored case, (Z, Y, X) uint8."""
    from partseg.geometry import Box

    _, label = case.read(Box.whole(case.shape))
    return label


def regrid_labels(labels: np.ndarray, source: Any, target: Any, classes: int) -> np.ndarray:
    """Labels (Z, Y, X) of case ``source`` on the grid of the same case in another store.

    Both stores record where their case lies in the original scan (``crop_box``,
    ``original_shape``, see :mod:`partseg.infer.export`): the labels go back to the original
    grid (resampled nearest, background outside the crop) and are cut to ``target``'s crop.

    Raises:
        ConfigError: the two cases come from scans of different shapes.
    """
    from partseg.infer.export import crop_box_of, labels_to_original_grid

    identity = {k: k for k in range(classes)}
    full = labels_to_original_grid(labels, source.attrs, identity)
    crop, original = crop_box_of(target.attrs, target.shape)
    if tuple(full.shape) != tuple(original):
        raise ConfigError(
            f"case {source.id}: the compared store holds it from a scan of shape {full.shape}, "
            f"the reference store from one of shape {tuple(original)}; ingest both from the "
            "same files"
        )
    return full[crop.slices()]


def _foreground_per_slice(case: Any) -> np.ndarray:
    """Foreground voxels of each Z slice of a case, (Z,) float."""
    return (whole_label(case) > 0).sum(axis=(1, 2)).astype(float)


def scoring_of(spec: EvaluationSpec) -> dict[str, Any]:
    """The evaluation settings that shape the scores (whether out-of-fold cases are scored too
    does not): part of the cache key, and ``scoring`` in the report's ``results.json``.

    Example:
        >>> scoring = scoring_of(EvaluationSpec(nonzero_mask=True))
        >>> scoring["partition"], scoring["nonzero_mask"], "out_of_fold" in scoring
        ('exact', True, False)
    """
    return {k: v for k, v in dataclasses.asdict(spec).items() if k != "out_of_fold"}


def evaluate_predictor(
    predictor: Predictor,
    store: Any,
    test: Sequence[str],
    slices: Sequence[OverlaySlice],
    spec: EvaluationSpec,
    cache: Path,
    *,
    progress: bool = True,
    reference: Any | None = None,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Score one predictor on the test cases (cached in ``cache``).

    With a ``reference`` store (the same cases at their original resolution), predictions are
    resampled to its grid (:func:`regrid_labels`) and scored against its labels; the overlay
    slices are then slices of the reference.

    Returns:
        The evaluation dict (``summary`` from :func:`partseg.metrics.summarize`, ``cases``,
        ``seam_index``, ``predict_seconds``, ``air_voxels``: mean foreground voxels scored
        outside the head, where every input channel is 0; ``masked_voxels``: mean foreground
        voxels the model predicted there and ``nonzero_mask`` set to background, None without
        it) and the predicted overlay slices, (Y, X) uint8 each.
    """

    from partseg.infer.postprocess import case_nonzero_mask, postprocess
    from partseg.infer.seams import seam_index
    from partseg.metrics import evaluate_case, original_diagonal, regions_for, summarize

    key = json.dumps(
        {"version": EVALUATION_VERSION, "checkpoint": predictor.key, "test": list(test),
         "slices": [dataclasses.astuple(s) for s in slices], "spec": scoring_of(spec),
         **({"reference": reference.url} if reference is not None else {})},
        sort_keys=True, default=list,
    )  # fmt: skip
    result_file, slices_file = cache / "evaluation.json", cache / "overlay.npz"
    if result_file.is_file() and slices_file.is_file():
        stored = json.loads(result_file.read_text())
        if stored.get("key") == key:
            with np.load(slices_file) as archive:
                return stored, [archive[f"arr_{i}"] for i in range(len(slices))]
    classes = tuple(store.classes)
    regions = regions_for(classes)
    cases, seams, picked, air, masked = {}, [], {}, [], []
    start = time.perf_counter()
    bar = Progress(len(test), f"evaluate {predictor.name}", unit="case", enabled=progress)
    for case_id in test:
        case = store[case_id]
        labels, probs, removed = predictor.predict(case)  # (Z, Y, X), (K, Z, Y, X) | None
        masked += [] if removed is None else [removed]
        if spec.min_component_size > 1:
            labels = postprocess(labels, min_component_size=spec.min_component_size)
        truth = case if reference is None else reference[case_id]
        if reference is not None:
            labels = regrid_labels(labels, case, truth, len(classes))
        # masked on this grid already: nothing outside the head, no second read of the image
        masked_here = removed is not None and reference is None
        air.append(0 if masked_here else int((labels[~case_nonzero_mask(truth)] > 0).sum()))
        gt = whole_label(truth)
        diagonal = original_diagonal(truth.attrs, truth.shape, truth.spacing)  # BraTS: 373.13
        cases[case_id] = evaluate_case(
            labels, gt, classes, truth.spacing, regions, hd95=spec.hd95_convention,
            max_distance=diagonal,
        )  # fmt: skip
        if spec.seam and probs is not None and predictor.core is not None:
            seams.append(seam_index(probs, predictor.core))
        for i, s in enumerate(slices):
            if s.case_id == case_id:
                picked[i] = labels[s.z]
        bar.update(note=case_id)
    bar.close()
    seconds = time.perf_counter() - start
    finite = [s for s in seams if np.isfinite(s)]
    result = {
        "key": key,
        "summary": summarize(cases),
        "cases": cases,
        "seam_index": float(np.mean(finite)) if finite else None,
        "predict_seconds": seconds / max(len(test), 1),
        "air_voxels": float(np.mean(air)) if air else None,
        "masked_voxels": float(np.mean(masked)) if masked else None,
    }
    overlay = [picked[i].astype(np.uint8) for i in range(len(slices))]
    with atomic_path(slices_file, suffix=".npz") as tmp, tmp.open("wb") as handle:
        np.savez_compressed(handle, *overlay)
    write_json(result_file, result)
    return result, overlay
