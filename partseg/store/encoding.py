"""How image values are stored: float32, float16, or int16 counts of a per-channel step.

``int16`` (the default) keeps each channel as whole counts ``t`` of a step ``s`` recorded in the
image array's attributes (``{"scale": [s_0, ..., s_C-1]}``); a read is ``value = t * s``, an
in-place multiply after the chunk copy. Scans are integers (BraTS .nii.gz files are int16), and a
z-score with a whole-number mean (see :func:`partseg.store.preprocess.zscore`) maps them onto the
lattice ``(x - mean) / std``: with ``s = 1 / std`` the counts are the scan's own integers, so the
store keeps them exactly, compresses like the scan, and reads with Blosc-lz4hc about 2x faster
than float16 with zstd (``tools/bench_io.py``). Background (0) stays 0.

Each channel's candidate step is checked against the data: when ``values / step`` is not whole
(resampled or float scans) or does not fit int16, the step falls back to ``max|value| / 32767``,
a quantisation error of at most half that step (finer than float16 for values above 0.5 in
magnitude on a z-score scale).

Example:
    >>> image = np.array([[[[0.0, -1.0, 3.0]]], [[[0.1, 0.2, 0.3]]]], np.float32)
    >>> counts, scale = encode(image, "int16", candidate_steps({"method": "none"}, 2))
    >>> counts.dtype, scale[0], counts[0].ravel().tolist()  # whole numbers: kept exactly
    (dtype('int16'), 1.0, [0, -1, 3])
    >>> round(scale[1] * 32767, 4), bool(np.abs(decode(counts, scale) - image).max() <= scale[1])
    (0.3, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DTYPES = ("int16", "float16", "float32")
INT16_MAX = 32767
#: Largest distance (in steps) from a whole count for which a candidate step counts as the data's
#: lattice (float32 z-scores of int16 scans are within 0.002 of it).
LATTICE_TOLERANCE = 0.01


def candidate_steps(normalization: Mapping[str, Any], n_channels: int) -> list[float | None]:
    """The value lattice each channel would have if its scan was made of integers.

    Args:
        normalization: a case's ``normalization`` attrs: ``{"method": "zscore", "stats":
            [{"mean": m, "std": s}, ...]}`` (step ``1 / s``) or ``{"method": "none"}``
            (step 1).
        n_channels: number of image channels.

    Example:
        >>> candidate_steps({"method": "zscore", "stats": [{"mean": 3, "std": 4.0}]}, 1)
        [0.25]
    """
    if normalization.get("method") == "zscore":
        return [1.0 / float(s["std"]) for s in normalization["stats"]]
    return [1.0] * n_channels


def encode(
    image: np.ndarray, dtype: str, steps: Sequence[float | None] | None = None
) -> tuple[np.ndarray, list[float] | None]:
    """``image`` (C, Z, Y, X) as stored: the array and, for int16, the per-channel scale.

    Args:
        image: float values to store.
        dtype: one of :data:`DTYPES`.
        steps: per channel, the step to try first (see :func:`candidate_steps`); None or a
            missing entry: the quantisation step ``max|value| / 32767``.

    Returns:
        (stored array, scale list or None for the float dtypes).
    """
    if dtype not in DTYPES:
        raise ValueError(f"stored dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype != "int16":
        return image.astype(dtype, copy=False), None
    steps = list(steps or [])
    counts = np.empty(image.shape, np.int16)
    scale = []
    for c, channel in enumerate(image):
        step = _step(channel, steps[c] if c < len(steps) else None)
        np.rint(channel / np.float64(step), out=counts[c], casting="unsafe")
        scale.append(step)
    return counts, scale


def _step(channel: np.ndarray, candidate: float | None) -> float:
    """``candidate`` if the channel's values are whole multiples of it within int16, else the
    quantisation step ``max|value| / 32767`` (1 for an all-zero channel)."""
    peak = float(np.abs(channel).max()) if channel.size else 0.0
    if candidate is not None and candidate > 0 and peak / candidate <= INT16_MAX:
        scaled = channel / np.float64(candidate)
        if float(np.abs(scaled - np.rint(scaled)).max(initial=0.0)) <= LATTICE_TOLERANCE:
            return float(candidate)
    return peak / INT16_MAX if peak > 0 else 1.0


def decode(stored: np.ndarray, scale: Sequence[float] | None) -> np.ndarray:
    """The float32 values of a stored (C, ...) array (``stored * scale`` per channel).

    Example:
        >>> decode(np.array([[2], [3]], np.int16), [0.5, 2.0]).tolist()
        [[1.0], [6.0]]
    """
    if scale is None:
        return stored.astype(np.float32)
    factors = np.asarray(scale, np.float32).reshape(-1, *([1] * (stored.ndim - 1)))
    return np.multiply(stored, factors, dtype=np.float32)
