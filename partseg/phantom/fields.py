"""Smooth random fields: a few random values per axis spread with cubic B-splines.

They shape everything irregular in a phantom: the cortical folds, the tumor outline and the
bias field of each channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["smooth_noise"]


def _spline_weights(n: int, cells: int) -> np.ndarray:
    """(n, cells + 3) cubic B-spline weights spreading ``cells`` intervals over ``n`` samples."""
    position = np.linspace(1.0, cells + 1.0, n)[:, None]  # (n, 1) in knot units
    distance = np.abs(position - np.arange(cells + 3)[None, :])  # (n, cells + 3)
    weights = np.where(
        distance < 1.0,
        2.0 / 3.0 - distance**2 + distance**3 / 2.0,
        np.where(distance < 2.0, (2.0 - distance) ** 3 / 6.0, 0.0),
    )
    return weights.astype(np.float32)


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], cells: int) -> np.ndarray:
    """A smooth random field of ``shape``, zero mean and unit variance, float32.

    ``cells`` random values per axis are spread with cubic B-splines, one separable matrix
    product per axis, so a full BraTS volume costs tens of milliseconds.
    """
    field = rng.standard_normal((cells + 3,) * len(shape)).astype(np.float32)
    for axis, n in enumerate(shape):
        weights = _spline_weights(n, cells)  # (n, cells + 3)
        field = np.moveaxis(np.tensordot(weights, field, axes=([1], [axis])), 0, axis)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)
