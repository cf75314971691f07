"""Rendering a tissue map as one MRI channel: contrast, bias field, Rician noise and scale.

:data:`CONTRAST` holds the relative intensity of each tissue per channel; voxels outside the
head are exactly 0 and voxels inside are integers >= 1.
"""

from __future__ import annotations

import numpy as np

from partseg.phantom.anatomy import Head
from partseg.phantom.fields import smooth_noise

__all__ = ["CONTRAST", "render_channel", "render_mixture"]

#: Relative intensity of each tissue (rows, in :class:`Tissue` order) per channel.
#: T1: dark core and necrosis; T1ce: bright enhancing rim; T2: bright edema and CSF;
#: FLAIR: bright edema, dark CSF. TOF: bright flowing blood on a dark brain.
CONTRAST: dict[str, np.ndarray] = {
    #                        bg    scalp skull csf   grey  white edema necro enh   vessel sac
    "t1": np.array([0.0, 1.25, 0.12, 0.30, 0.70, 1.00, 0.72, 0.32, 0.85, 0.0, 0.0]),
    "t1ce": np.array([0.0, 1.25, 0.12, 0.30, 0.72, 1.00, 0.76, 0.38, 1.90, 0.0, 0.0]),
    "t2": np.array([0.0, 0.90, 0.10, 1.90, 0.80, 0.55, 1.40, 1.65, 1.05, 0.0, 0.0]),
    "flair": np.array([0.0, 0.90, 0.10, 0.15, 0.80, 0.60, 1.60, 0.55, 1.10, 0.0, 0.0]),
    "tof": np.array([0.0, 0.55, 0.05, 0.08, 0.30, 0.25, 0.0, 0.0, 0.0, 1.00, 0.90]),
}


def render_channel(
    tissue: np.ndarray, head: Head, contrast: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One channel: tissue contrast x bias field, Rician noise, scale; 0 outside the head.

    Returns float32 (Z, Y, X), integer-valued, >= 1 inside the head.
    """
    local = tissue[head.box]
    levels = (contrast * rng.uniform(0.96, 1.04, contrast.size)).astype(np.float32)
    signal = levels[local]  # (box) float32
    signal *= 1.0 + 0.03 * head.folds  # mild texture that follows the cortical folds
    image = np.zeros(tissue.shape, dtype=np.float32)
    image[head.box] = _acquire(signal, head.rho <= 1.0, rng)
    return image


def render_mixture(
    fractions: np.ndarray,
    contrast: np.ndarray,
    inside: np.ndarray,
    rng: np.random.Generator,
    bias: float = 0.12,
    noise: float = 0.035,
) -> np.ndarray:
    """One channel of tissue fractions: the fraction-weighted contrast, then :func:`_acquire`.

    Args:
        fractions: (T, Z, Y, X) float32 share of each tissue (rows in :class:`Tissue` order,
            the first ``T``) in every voxel: partial volumes blend the tissues' intensities.
        contrast: a row of :data:`CONTRAST`.
        inside: (Z, Y, X) bool, the head; every other voxel is 0.
        rng: the case's generator.
        bias, noise: as in :func:`_acquire`.

    Example:
        >>> fractions = np.zeros((6, 2, 2, 2), np.float32); fractions[5] = 1.0
        >>> image = render_mixture(fractions, CONTRAST["t1"], fractions[5] > 0,
        ...                        np.random.default_rng(0))
        >>> bool(image.min() >= 1), image.dtype
        (True, dtype('float32'))
    """
    n = fractions.shape[0]
    levels = (contrast[:n] * rng.uniform(0.96, 1.04, n)).astype(np.float32)
    signal = np.tensordot(levels, fractions, axes=1)  # (Z, Y, X)
    return _acquire(signal, inside, rng, bias=bias, noise=noise)


def _acquire(
    signal: np.ndarray,
    inside: np.ndarray,
    rng: np.random.Generator,
    bias: float = 0.12,
    noise: float = 0.035,
) -> np.ndarray:
    """What a scanner makes of ``signal``: bias field, Rician noise, gain, int16 values.

    The signal is multiplied by a smooth log-normal bias field of ``bias`` standard
    deviation, gets complex Gaussian noise of ``noise`` (on a white matter level of about 1)
    and a per-scan gain of 400-1200; the magnitude is rounded to integers >= 1 inside and is
    exactly 0 outside. Returns float32 of ``signal``'s shape.
    """
    signal = signal * np.exp(np.float32(bias) * smooth_noise(rng, signal.shape, cells=2))
    sigma = np.float32(noise)
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    magnitude = np.sqrt(real * real + imag * imag)  # Rician: |signal + complex noise|
    magnitude *= np.float32(rng.uniform(400.0, 1200.0))
    return np.where(inside, np.clip(np.rint(magnitude), 1.0, 32767.0), 0.0).astype(np.float32)
