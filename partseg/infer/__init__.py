"""Inference: partitioned prediction, seam-free stitching, post-processing, ensembles, export.

Example (needs a dataset on disk, so it is not run as a test)::

    from partseg.infer import predict_case
    from partseg.store import open_store
    from partseg.train.checkpoint import load_model

    loaded = load_model("runs/brats_3d")
    case = open_store("brats.zarr")["BraTS20_Training_001"]
    probs = predict_case(loaded.model, case, loaded.partition, loaded.layout)  # (K, Z, Y, X)
"""

from __future__ import annotations

from partseg.infer.predictor import (
    ArrayCase,
    exact_partition,
    norm_warning,
    predict_case,
    predict_whole,
    whole_partition,
)
from partseg.infer.stitch import MemoryBackend, Stitcher, ZarrBackend

__all__ = [
    "ArrayCase",
    "MemoryBackend",
    "Stitcher",
    "ZarrBackend",
    "exact_partition",
    "norm_warning",
    "predict_case",
    "predict_whole",
    "whole_partition",
]
