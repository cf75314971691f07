"""Predictors: how a trained run, an ensemble of runs or a cascade labels one test case."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partseg.errors import ConfigError
from partseg.experiments.config import CascadeSpec, EvaluationSpec


@dataclass
class Predictor:
    """How to turn one test case into labels: a model on a partition, or a cascade."""

    name: str
    predict: Callable[[Any], tuple[np.ndarray, np.ndarray | None]]  # case -> (labels, probs)
    core: tuple[int, ...] | None
    parameters: int
    key: str  # changes when the checkpoints change


def model_predictor(name: str, run_dirs: Sequence[Path], spec: EvaluationSpec) -> Predictor:
    """Stitched minicube prediction of one run, or the ensemble of several."""
    import torch

    from partseg.infer.ensemble import EnsembleModel, check_members, ensemble_partition
    from partseg.infer.predictor import predict_case
    from partseg.infer.stitch import labels_from_probabilities
    from partseg.train.checkpoint import load_model

    device = _device()
    loaded = [load_model(d, device=device) for d in run_dirs]
    if len(loaded) == 1:
        model, partition = loaded[0].model, loaded[0].partition
    else:
        check_members(loaded)
        _check_same_derived(name, loaded)
        model = EnsembleModel([m.model for m in loaded]).eval()
        partition = ensemble_partition([m.partition for m in loaded])
    layout = loaded[0].layout
    derive = loaded[0].derive  # the run's data.derived_channels (None without)

    def predict(case: Any) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            probs = predict_case(
                model, case, partition, layout, batch_size=spec.batch_size, device=device,
                blend=spec.blend, derive=derive,
            )  # fmt: skip  # (K, Z, Y, X)
        return labels_from_probabilities(probs), probs

    key = checkpoint_key(run_dirs)
    params = sum(int(m.model.num_parameters()) for m in loaded)
    return Predictor(name, predict, tuple(partition.core), params, key)


def _check_same_derived(name: str, loaded: Sequence[Any]) -> None:
    """Ensemble members see one input, so they must derive the same channels."""
    kinds = {tuple(m.derived_channels) for m in loaded}
    if len(kinds) > 1:
        raise ConfigError(
            f"ensemble {name}: its members were trained with different data.derived_channels "
            f"({sorted(list(k) for k in kinds)}); ensemble only variants with the same inputs"
        )


def cascade_predictor(spec: CascadeSpec, coarse: Path, fine: Path, ev: EvaluationSpec) -> Predictor:
    """The coarse-to-fine cascade of two trained runs."""
    import torch

    from partseg.infer.cascade import Stage, predict_cascade
    from partseg.train.checkpoint import load_model

    device = _device()
    a, b = load_model(coarse, device=device), load_model(fine, device=device)

    def predict(case: Any) -> tuple[np.ndarray, None]:
        with torch.no_grad():
            result = predict_cascade(
                Stage(a.model, a.partition, a.layout, a.derive),
                Stage(b.model, b.partition, b.layout, b.derive),
                case, voi_size=spec.voi, min_size=spec.min_size, batch_size=ev.batch_size,
                device=device,
            )  # fmt: skip
        return result.labels.astype(np.uint8), None

    key = checkpoint_key([coarse, fine])
    params = int(a.model.num_parameters()) + int(b.model.num_parameters())
    return Predictor(spec.name, predict, None, params, key)


def _device() -> str:
    """Predict on the GPU when one is visible."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def checkpoint_key(run_dirs: Sequence[Path]) -> str:
    """A key of the runs' checkpoints (path, size, mtime) that changes when one is rewritten."""
    from partseg.train.checkpoint import resolve_checkpoint

    digest = hashlib.sha256()
    for path in map(resolve_checkpoint, run_dirs):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]
