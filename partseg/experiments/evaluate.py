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
from partseg.experiments.config import EvaluationSpec
from partseg.experiments.predictors import Predictor


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


def _foreground_per_slice(case: Any) -> np.ndarray:
    """Foreground voxels of each Z slice of a case, (Z,) float."""
    return (whole_label(case) > 0).sum(axis=(1, 2)).astype(float)


def evaluate_predictor(
    predictor: Predictor,
    store: Any,
    test: Sequence[str],
    slices: Sequence[OverlaySlice],
    spec: EvaluationSpec,
    cache: Path,
    *,
    progress: bool = True,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Score one predictor on the test cases (cached in ``cache``).

    Returns:
        The evaluation dict (``summary`` from :func:`partseg.metrics.summarize`, ``cases``,
        ``seam_index``, ``predict_seconds``, ``air_voxels``: mean foreground voxels predicted
        outside the head, where every input channel is 0) and the predicted overlay slices,
        (Y, X) uint8 each.
    """
    from tqdm import tqdm

    from partseg.infer.postprocess import case_nonzero_mask, postprocess
    from partseg.infer.seams import seam_index
    from partseg.metrics import evaluate_case, regions_for, summarize

    key = json.dumps(
        {"checkpoint": predictor.key, "test": list(test), "slices": [dataclasses.astuple(s)
         for s in slices], "spec": dataclasses.asdict(spec)}, sort_keys=True, default=list,
    )  # fmt: skip
    result_file, slices_file = cache / "evaluation.json", cache / "overlay.npz"
    if result_file.is_file() and slices_file.is_file():
        stored = json.loads(result_file.read_text())
        if stored.get("key") == key:
            with np.load(slices_file) as archive:
                return stored, [archive[f"arr_{i}"] for i in range(len(slices))]
    classes = tuple(store.classes)
    regions = regions_for(classes)
    cases, seams, picked, air = {}, [], {}, []
    start = time.perf_counter()
    for case_id in tqdm(test, desc=f"evaluate {predictor.name}", unit="case", disable=not progress):
        case = store[case_id]
        labels, probs = predictor.predict(case)  # (Z, Y, X), (K, Z, Y, X) | None
        if spec.min_component_size > 1:
            labels = postprocess(labels, min_component_size=spec.min_component_size)
        air.append(int((labels[~case_nonzero_mask(case)] > 0).sum()))
        gt = whole_label(case)
        cases[case_id] = evaluate_case(
            labels, gt, classes, case.spacing, regions, hd95=spec.hd95_convention
        )
        if spec.seam and probs is not None and predictor.core is not None:
            seams.append(seam_index(probs, predictor.core))
        for i, s in enumerate(slices):
            if s.case_id == case_id:
                picked[i] = labels[s.z]
    seconds = time.perf_counter() - start
    finite = [s for s in seams if np.isfinite(s)]
    result = {
        "key": key,
        "summary": summarize(cases),
        "cases": cases,
        "seam_index": float(np.mean(finite)) if finite else None,
        "predict_seconds": seconds / max(len(test), 1),
        "air_voxels": float(np.mean(air)) if air else None,
    }
    overlay = [picked[i].astype(np.uint8) for i in range(len(slices))]
    with atomic_path(slices_file, suffix=".npz") as tmp, tmp.open("wb") as handle:
        np.savez_compressed(handle, *overlay)
    write_json(result_file, result)
    return result, overlay
