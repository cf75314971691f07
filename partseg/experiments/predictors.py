"""Predictors: how a trained run, an ensemble of runs or a cascade labels one test case."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from partseg.experiments.config import CascadeSpec, EvaluationSpec

if TYPE_CHECKING:
    from partseg.infer.settings import PredictSettings


@dataclass
class Predictor:
    """How to turn one test case into labels: a model on a partition, or a cascade.

    ``predict`` maps a case to its labels, its probabilities (None for a cascade) and the
    foreground voxels the nonzero mask removed (None without ``evaluation.nonzero_mask``).
    """

    name: str
    predict: Callable[[Any], tuple[np.ndarray, np.ndarray | None, int | None]]
    core: tuple[int, ...] | None
    parameters: int
    key: str  # changes when the checkpoints change


def predict_settings(spec: EvaluationSpec) -> PredictSettings:
    """The :class:`~partseg.infer.settings.PredictSettings` of the evaluation section."""
    from partseg.infer.settings import PredictSettings

    return PredictSettings(
        mode=spec.partition, blend=spec.blend, overlap=spec.overlap, batch_size=spec.batch_size,
        nonzero_mask=spec.nonzero_mask,
    )  # fmt: skip


def model_predictor(name: str, run_dirs: Sequence[Path], spec: EvaluationSpec) -> Predictor:
    """The prediction of one run, or the ensemble of several (the shared CasePredictor)."""
    from partseg.infer.pipeline import CasePredictor

    predictor = CasePredictor.from_checkpoints(run_dirs, predict_settings(spec), log=_quiet)

    def predict(case: Any) -> tuple[np.ndarray, np.ndarray, int | None]:
        prediction = predictor.predict(case)  # probabilities float32 (K, Z, Y, X)
        return prediction.labels, prediction.probabilities, prediction.masked_voxels

    params = sum(int(m.model.num_parameters()) for m in predictor.members)
    # Only the grid has tile faces; exact and none equal model(volume), seam-free by construction
    # (a seam index there measures where tumour borders cross the grid, see docs/stitching.md).
    core = tuple(predictor.partition.core) if predictor.mode_name == "grid" else None
    return Predictor(name, predict, core, params, predictor.key)


def _quiet(message: str) -> None:
    """Compare predicts many runs: partition notes were already logged by their training."""


def cascade_predictor(spec: CascadeSpec, coarse: Path, fine: Path, ev: EvaluationSpec) -> Predictor:
    """The coarse-to-fine cascade of two trained runs, each through its CasePredictor."""
    from partseg.checkpoint import checkpoint_key
    from partseg.infer.cascade import predict_cascade
    from partseg.infer.pipeline import CasePredictor

    settings = predict_settings(ev)
    a = CasePredictor.from_checkpoints([coarse], settings, log=_quiet)
    b = CasePredictor.from_checkpoints([fine], settings, log=_quiet)

    def predict(case: Any) -> tuple[np.ndarray, None, int | None]:
        result = predict_cascade(a, b, case, voi_size=spec.voi, min_size=spec.min_size)
        return result.labels.astype(np.uint8), None, result.masked_voxels

    key = checkpoint_key([coarse, fine])
    params = int(a.model.num_parameters()) + int(b.model.num_parameters())
    return Predictor(spec.name, predict, None, params, key)
