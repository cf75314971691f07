"""Inference: one prediction pipeline, seam-free stitching, post-processing, ensembles, export.

:class:`~partseg.infer.pipeline.CasePredictor` is the pipeline ``partseg predict``, compare and
validation share; :mod:`~partseg.infer.modes` holds the prediction modes (``grid``, ``none``),
:mod:`~partseg.infer.runs` the resumable batch over a store or a raw folder. Names are imported
on first use, so reading the registries (CLI choices, config validation) loads no torch.

Example (needs a dataset on disk, so it is not run as a test)::

    from partseg.infer import CasePredictor, PredictSettings
    from partseg.store import open_store

    predictor = CasePredictor.from_checkpoints(["runs/brats_3d"], PredictSettings())
    case = open_store("brats.zarr")["BraTS20_Training_001"]
    probs = predictor.predict(case).probabilities  # (K, Z, Y, X)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ArrayCase": "partseg.infer.predictor",
    "CasePredictor": "partseg.infer.pipeline",
    "MemoryBackend": "partseg.infer.stitch",
    "Prediction": "partseg.infer.pipeline",
    "PredictSettings": "partseg.infer.settings",
    "Stitcher": "partseg.infer.stitch",
    "ZarrBackend": "partseg.infer.stitch",
    "exact_partition": "partseg.infer.partitions",
    "norm_warning": "partseg.infer.predictor",
    "predict_case": "partseg.infer.predictor",
    "predict_whole": "partseg.infer.predictor",
    "whole_partition": "partseg.infer.partitions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'partseg.infer' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
