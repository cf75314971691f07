"""Inference: partitioned prediction, seam-free stitching, post-processing, ensembles, export.

Example:
    >>> from partseg.infer import Stitcher, predict_case  # doctest: +SKIP
    >>> loaded = load_model("runs/brats_3d")  # doctest: +SKIP
    >>> probs = predict_case(loaded.model, store["c1"], loaded.partition,
    ...                      loaded.layout)  # doctest: +SKIP
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
