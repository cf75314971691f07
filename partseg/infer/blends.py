"""Blend modes and their overlap: how overlapping predictions of neighbouring cores are merged.

:data:`BLENDS` is the one list of blend modes (the CLI's ``--blend`` choices and the
``evaluation.blend`` values read it). Each entry is a 1D window ``n -> weights``; a predicted
region of a minicube is weighted by the outer product of its axes' windows.

* ``crop``: no overlap; every core is kept once (the window is never used).
* ``average``: equal weights.
* ``gaussian``: a Gaussian of sigma = 1/8 of the region (nnU-Net's sliding window weights).
* ``hann``: a Hann window, falling towards the region border.

**Overlap** is its own setting, independent of the context margin: how far neighbouring
predicted regions overlap, either as a fraction of the core (``0.5``: neighbours share half a
core, so each region reaches a quarter core beyond its core on every side) or in whole voxels
(``16``: neighbours share 16 voxels, 8 per side; an even number). Blends default to ``0.5``
(:data:`DEFAULT_OVERLAP`). The network reads the predicted region plus the context margin, so a
blend with margin 0 still blends. For comparison, nnU-Net's default step of half a window is
overlap ``1.0`` here (regions of two cores, one core apart). ``crop`` with an overlap, or a
blend with overlap 0 (which would equal ``crop``), is a configuration error.

Example:
    >>> BLENDS.names()
    ('crop', 'average', 'gaussian', 'hann')
    >>> window_1d(3, "hann").round(3).tolist()
    [0.5, 1.0, 0.5]
    >>> overlap_per_side(0.5, "gaussian", (1, 80, 96))    # (slice axis of a 2D model, Y, X)
    (0, 20, 24)
    >>> overlap_per_side(16, "hann", (8, 8, 8))
    (8, 8, 8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from partseg.errors import ConfigError
from partseg.registry import Registry

#: Overlap of the blend modes when none is given: neighbouring regions share half a core.
DEFAULT_OVERLAP = 0.5

Shape = tuple[int, ...]
Overlap = float | int | None  # fraction of the core (float), voxels (int), default (None)


def _flat(n: int) -> np.ndarray:
    return np.ones(n, np.float64)


def _gaussian(n: int, sigma_scale: float = 0.125) -> np.ndarray:
    centre = (n - 1) / 2
    sigma = max(sigma_scale * n, 1e-3)
    return np.exp(-((np.arange(n) - centre) ** 2) / (2 * sigma**2))


def _hann(n: int) -> np.ndarray:
    return np.hanning(n + 2)[1:-1]  # strictly positive: the zero end points are dropped


BLENDS: Registry = Registry("blend mode")
BLENDS.add("crop", _flat, help="keep each core once; no overlap")
BLENDS.add("average", _flat, help="overlapping predictions averaged with equal weights")
BLENDS.add("gaussian", _gaussian, help="Gaussian weights, sigma 1/8 of the region (nnU-Net)")
BLENDS.add("hann", _hann, help="Hann window weights, falling towards the region border")


def window_1d(n: int, blend: str) -> np.ndarray:
    """Per-voxel weights along one axis of a predicted region, all strictly positive.

    Example:
        >>> window_1d(2, "average").tolist()
        [1.0, 1.0]
    """
    window = BLENDS.get(blend, key="blend")
    return _flat(n) if n == 1 else window(n)


def blend_weights(size: Sequence[int], blend: str) -> np.ndarray:
    """Separable weights (*size) float32 for one predicted region (product of 1D windows)."""
    weights = np.ones((), np.float64)
    for n in size:
        weights = np.multiply.outer(weights, window_1d(int(n), blend))
    return np.maximum(weights, 1e-12).astype(np.float32)


def parse_overlap(text: str | float | int | None) -> Overlap:
    """An overlap as given on the command line: ``0.5`` (fraction), ``16`` (voxels), or None.

    Example:
        >>> parse_overlap("0.25"), parse_overlap("16"), parse_overlap(None)
        (0.25, 16, None)
    """
    if text is None or (isinstance(text, int | float) and not isinstance(text, bool)):
        return text
    value = str(text).strip()
    try:
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        raise ConfigError(
            f"--overlap={text!r}: give a fraction of the core (e.g. 0.5) or whole voxels (e.g. 16)"
        ) from None


def check_overlap(
    blend: str, overlap: Overlap, *, key: str = "overlap", blend_key: str = "blend"
) -> None:
    """Raise ConfigError unless ``blend`` and ``overlap`` make sense together.

    Args:
        blend: a :data:`BLENDS` name.
        overlap: a fraction of the core in (0, 1], an even number of voxels, 0, or None
            (default: :data:`DEFAULT_OVERLAP` for blends, none for ``crop``).
        key: how the caller names the overlap setting (``--overlap``,
            ``evaluation.overlap``), for messages.
        blend_key: how the caller names the blend setting.

    Example:
        >>> check_overlap("gaussian", 0.5)
        >>> check_overlap("gaussian", 0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        partseg.errors.ConfigError: overlap=0 with blend='gaussian' predicts no voxel twice, ...
    """
    BLENDS.check(blend, key=blend_key)
    if overlap is None:
        return
    if isinstance(overlap, bool) or not isinstance(overlap, int | float):
        raise ConfigError(f"{key}={overlap!r}: give a fraction of the core or whole voxels")
    if isinstance(overlap, float) and not 0.0 <= overlap <= 1.0:
        raise ConfigError(f"{key}={overlap}: a fraction of the core must lie in [0, 1]")
    if isinstance(overlap, int) and (overlap < 0 or overlap % 2):
        raise ConfigError(
            f"{key}={overlap}: voxels must be even and >= 0 (each predicted region grows by "
            "half of them on every side)"
        )
    if blend == "crop" and overlap:
        raise ConfigError(
            f"{key}={overlap} with {blend_key}='crop': crop keeps each core once and predicts no "
            "overlap; use a blend (average, gaussian, hann) or drop the overlap"
        )
    if blend != "crop" and not overlap:
        raise ConfigError(
            f"{key}={overlap} with {blend_key}={blend!r} predicts no voxel twice, which equals "
            "crop; give an overlap (e.g. 0.5 of the core) or use crop"
        )


def overlap_per_side(overlap: Overlap, blend: str, core: Sequence[int]) -> Shape:
    """Voxels each predicted region reaches beyond its core on every side, per axis.

    A fraction ``f`` gives ``ceil(f * core / 2)`` (neighbours share ``f`` of a core); voxels
    ``v`` give ``v / 2``. Axes whose core is 1 (the slice axis of 2D models) never overlap;
    ``crop`` never overlaps.
    """
    check_overlap(blend, overlap)
    if blend == "crop":
        return (0,) * len(core)
    value = DEFAULT_OVERLAP if overlap is None else overlap
    per_side = []
    for c in core:
        if int(c) == 1:
            per_side.append(0)
        elif isinstance(value, float):
            per_side.append(math.ceil(value * int(c) / 2))
        else:
            per_side.append(int(value) // 2)
    return tuple(per_side)
