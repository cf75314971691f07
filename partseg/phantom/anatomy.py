"""The head: tissue classes and an ellipsoidal head of scalp, skull, CSF, grey and white matter.

:class:`Head` draws the head's position, size and cortical folds from the case's generator and
builds the (Z, Y, X) :class:`Tissue` map that the tumor or the vessels are then painted into.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from partseg.phantom.fields import smooth_noise

__all__ = ["BRAIN_OUTER", "Head", "Tissue"]


class Tissue(IntEnum):
    """Tissue classes of the rendering map (not the labels written to the seg file)."""

    BACKGROUND = 0
    SCALP = 1
    SKULL = 2
    CSF = 3
    GREY = 4
    WHITE = 5
    EDEMA = 6
    NECROSIS = 7
    ENHANCING = 8
    VESSEL = 9
    SAC = 10


#: Shell boundaries in units of the head's normalised ellipsoid radius (1 = outer scalp).
_SKULL_OUTER, _SKULL_INNER, BRAIN_OUTER = 0.95, 0.89, 0.86
#: Cortex thickness and sulcus depth in units of the brain's normalised radius.
_CORTEX, _SULCUS_DEPTH = 0.05, 0.16


@dataclass(frozen=True, eq=False)
class Head:
    """An ellipsoidal head: centre and semi-axes in voxels, (Z, Y, X), and its random fields."""

    shape: tuple[int, int, int]
    centre: np.ndarray  # (3,) float
    axes: np.ndarray  # (3,) float, outer scalp semi-axes
    box: tuple[slice, ...]  # bounding box of the head in the volume
    rho: np.ndarray  # (box) float32 normalised radius, 1 on the scalp surface
    folds: np.ndarray  # (box) float32 smooth noise shaping sulci and the cortex ribbon
    ventricle_scale: float

    @classmethod
    def draw(cls, shape: tuple[int, int, int], rng: np.random.Generator) -> Head:
        """Draw a head near the centre of a ``shape`` volume, and its folds, from ``rng``."""
        size = np.asarray(shape, dtype=np.float64)
        centre = size / 2.0 + rng.uniform(-0.02, 0.02, 3) * size
        axes = np.array([0.40, 0.42, 0.34]) * size * rng.uniform(0.95, 1.03, 3)
        lo = np.maximum(np.floor(centre - axes) - 1, 0).astype(int)
        hi = np.minimum(np.ceil(centre + axes) + 2, size).astype(int)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        grids = [
            ((np.arange(a, b, dtype=np.float32) - c) / r)
            for a, b, c, r in zip(lo, hi, centre, axes, strict=True)
        ]
        rho2 = grids[0][:, None, None] ** 2 + grids[1][None, :, None] ** 2
        rho2 = rho2 + grids[2][None, None, :] ** 2
        folds = smooth_noise(rng, rho2.shape, cells=max(4, int(max(shape) / 16)))
        scale = float(rng.uniform(0.8, 1.25))
        return cls(shape, centre, axes, box, np.sqrt(rho2), folds, scale)

    def box_coords(self) -> list[np.ndarray]:
        """Per-axis coordinates of the head box, normalised by the brain semi-axes."""
        brain_axes = self.axes * BRAIN_OUTER
        return [
            ((np.arange(s.start, s.stop, dtype=np.float32) - c) / r)
            for s, c, r in zip(self.box, self.centre, brain_axes, strict=True)
        ]

    def tissue_map(self) -> np.ndarray:
        """Return the (Z, Y, X) uint8 map of scalp, skull, CSF, grey and white matter.

        Sulci are the thin zero-level sheets of the ``folds`` field near the brain surface:
        CSF inside, lined with grey matter, so the cortex ribbon folds into the white matter.
        """
        rho, folds = self.rho, self.folds
        brain_rho = rho / BRAIN_OUTER * (1.0 + 0.01 * folds)
        ridge = np.abs(folds)  # small on the zero-level sheets of the field
        local = np.full(rho.shape, Tissue.BACKGROUND, dtype=np.uint8)
        local[rho <= 1.0] = Tissue.SCALP
        local[rho <= _SKULL_OUTER] = Tissue.SKULL
        local[rho <= _SKULL_INNER] = Tissue.CSF
        local[brain_rho <= 1.0] = Tissue.GREY
        deep = (ridge > 0.5) | (brain_rho < 1.0 - _SULCUS_DEPTH - _CORTEX)
        local[deep & (brain_rho <= 1.0 - _CORTEX)] = Tissue.WHITE
        local[(ridge < 0.12) & (brain_rho > 1.0 - _SULCUS_DEPTH) & (brain_rho <= 1.0)] = Tissue.CSF
        local[self._ventricles()] = Tissue.CSF
        tissue = np.zeros(self.shape, dtype=np.uint8)
        tissue[self.box] = local
        return tissue

    def _ventricles(self) -> np.ndarray:
        """Two lateral ventricles: ellipsoids either side of the midline, slightly superior."""
        z, y, x = self.box_coords()
        semi = np.array([0.18, 0.36, 0.09]) * self.ventricle_scale
        inside = np.zeros(self.rho.shape, dtype=bool)
        for side in (-1.0, 1.0):
            d2 = ((z - 0.08) / semi[0])[:, None, None] ** 2
            d2 = d2 + ((y + 0.02) / semi[1])[None, :, None] ** 2
            d2 = d2 + ((x - side * 0.12 * self.ventricle_scale) / semi[2])[None, None, :] ** 2
            inside |= d2 <= 1.0
        return inside

    def random_point(self, rng: np.random.Generator, max_rho: float) -> np.ndarray:
        """A uniform random point (Z, Y, X voxels) within ``max_rho`` of the brain ellipsoid."""
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        radius = max_rho * rng.uniform(0.0, 1.0) ** (1.0 / 3.0)
        return self.centre + direction * radius * self.axes * BRAIN_OUTER
