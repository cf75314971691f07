"""The per-case deformation of the template: where each phantom voxel samples the anatomy.

A realistic phantom's voxel at world position ``w`` (mm from the grid centre, (Z, Y, X)) takes
the template anatomy at

    p = anchor + A^-1 w + u(w),   then pushed away from the tumour centre (mass effect),

where ``anchor`` places the head in the field of view (centred, or its top just below the top
of the grid when the grid is too short for the whole head, as BraTS cuts the brain stem),
``A`` is a small random affine (rotation up to a few degrees, scale 0.9-1.1 per axis, shift
a few mm) and ``u`` a smooth random displacement of a few mm (the shape of every sulcus and
ventricle changes a little). The mass effect pulls sampling positions towards the tumour
centre, so the tissue around a tumour looks pushed away from it (ventricles compressed).

The grid is isotropic: the BraTS field of view (155 x 240 x 240 mm) at 1 mm for the BraTS
shape, coarser voxels for smaller grids (:func:`grid_spacing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from partseg.phantom.fields import smooth_noise
from partseg.phantom.template import Template

__all__ = ["FIELD_OF_VIEW", "Warp", "draw_warp", "grid_spacing", "push_away"]

#: The BraTS field of view in mm, (Z, Y, X): 155 x 240 x 240 voxels of 1 mm.
FIELD_OF_VIEW = (155.0, 240.0, 240.0)
#: Thickness of the tissues around the brain (CSF, skull, scalp) at most, in mm.
HEAD_SHELL = 16.0
#: Air kept above the head when the grid cannot hold the whole head, in mm.
_TOP_AIR = 4.0


def grid_spacing(shape: Sequence[int]) -> float:
    """Isotropic voxel edge (mm) that fits the BraTS field of view into ``shape``.

    Example:
        >>> grid_spacing((155, 240, 240)), grid_spacing((48, 64, 64))
        (1.0, 3.75)
    """
    return float(max(f / n for f, n in zip(FIELD_OF_VIEW, shape, strict=True)))


@dataclass(frozen=True, eq=False)
class Warp:
    """Template millimetres sampled by every voxel of one case.

    Attributes:
        positions: (3, Z, Y, X) float32 template mm.
        spacing: voxel edge of the case grid in mm.
    """

    positions: np.ndarray
    spacing: float

    def sample(
        self, template: Template, values: np.ndarray, box: tuple[slice, ...] = ()
    ) -> np.ndarray:
        """Trilinear sample of a ``template`` map (``values``) at the voxels of ``box``
        (default: every voxel), float32."""
        from scipy import ndimage

        index = template.index(self.positions[(slice(None), *box)])
        return ndimage.map_coordinates(values, index, order=1, mode="nearest", output=np.float32)

    def nearest_voxel(self, point: np.ndarray) -> tuple[int, int, int]:
        """Index of the voxel whose sampling position is nearest to ``point`` (template mm).

        Searched on every 4th voxel, then around the best one (the warp is smooth).
        """
        step = 4
        coarse = _argmin_distance(self.positions[:, ::step, ::step, ::step], point)
        box = tuple(slice(max(c * step - step, 0), c * step + step + 1) for c in coarse)
        fine = _argmin_distance(self.positions[(slice(None), *box)], point)
        z, y, x = (int(f + b.start) for f, b in zip(fine, box, strict=True))
        return z, y, x


def draw_warp(rng: np.random.Generator, shape: tuple[int, int, int], template: Template) -> Warp:
    """Draw one case's deformation: placement, random affine and smooth displacement.

    Example:
        >>> from partseg.phantom.template import load_template
        >>> warp = draw_warp(np.random.default_rng(0), (16, 24, 24), load_template(8))
        >>> warp.positions.shape, warp.spacing
        ((3, 16, 24, 24), 10.0)
    """
    spacing = grid_spacing(shape)
    world = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * spacing for n in shape]
    inverse = _random_affine(rng)  # (3, 4): template offset from the anchor = M @ [w, 1]
    anchor = _anchor(template, shape, spacing)
    positions = np.empty((3, *shape), dtype=np.float32)
    for k in range(3):
        axis = (
            inverse[k, 0] * world[0][:, None, None]
            + inverse[k, 1] * world[1][None, :, None]
            + inverse[k, 2] * world[2][None, None, :]
        )
        positions[k] = axis + np.float32(anchor[k] + inverse[k, 3])
    amplitude = np.float32(rng.uniform(2.0, 4.0))  # mm
    cells = max(2, min(5, int(max(shape) / 12)))
    for k in range(3):
        positions[k] += amplitude * smooth_noise(rng, shape, cells=cells)
    return Warp(positions, spacing)


def push_away(
    warp: Warp,
    centre: np.ndarray,
    voxel: tuple[int, int, int],
    radius: float,
    depth: np.ndarray,
    rng: np.random.Generator,
) -> Warp:
    """The tumour's mass effect: ``warp`` with positions pulled towards ``centre``.

    ``p -> c + (p - c) (1 - a w exp(-|p - c|^2 / 2 r^2))`` with ``a < 1`` stays monotonic
    along every ray, so the anatomy is squeezed, never folded; ``w`` fades from 1 at 15 mm
    inside the brain to 0 at its surface (``depth``: the case's sampled signed distance to
    the brain surface, mm), so the skull does not bulge. Only voxels within 3 r of the
    centre's ``voxel`` move (the rest moves by less than 1 % of ``a r``).
    """
    strength = np.float32(rng.uniform(0.2, 0.4))
    reach = int(np.ceil(3.0 * radius / warp.spacing)) + 1
    box = tuple(slice(max(c - reach, 0), c + reach + 1) for c in voxel)
    positions = warp.positions.copy()
    local = positions[(slice(None), *box)]  # a view
    offset = local - centre.astype(np.float32)[:, None, None, None]
    dist2 = np.einsum("k...,k...->...", offset, offset)
    weight = np.clip(-depth[box] / np.float32(15.0), 0.0, 1.0)
    shrink = 1.0 - strength * weight * np.exp(-dist2 / np.float32(2.0 * radius**2))
    local[:] = centre.astype(np.float32)[:, None, None, None] + offset * shrink
    return Warp(positions, warp.spacing)


def _random_affine(rng: np.random.Generator) -> np.ndarray:
    """(3, 4) map from world mm to template mm offsets: rotation, scale and shift."""
    angles = np.radians(rng.uniform(-1.0, 1.0, 3) * np.array([4.0, 6.0, 6.0]))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        turn = np.eye(3)
        turn[i, i], turn[i, j], turn[j, i], turn[j, j] = c, -s, s, c
        rotation = rotation @ turn
    scale = rng.uniform(0.93, 1.07) * rng.uniform(0.97, 1.03, 3)  # brain size, then shape
    shift = rng.uniform(-4.0, 4.0, 3)
    return np.concatenate([rotation / scale[None, :], shift[:, None]], axis=1)


def _anchor(template: Template, shape: Sequence[int], spacing: float) -> np.ndarray:
    """Template mm at the grid centre: the head's centre, or lower when the head is too tall."""
    lo, hi = template.brain_lo - HEAD_SHELL, template.brain_hi + HEAD_SHELL
    anchor = (lo + hi) / 2.0
    half_height = shape[0] * spacing / 2.0
    anchor[0] = max(anchor[0], hi[0] + _TOP_AIR - half_height)  # keep the top of the head
    return anchor


def _argmin_distance(positions: np.ndarray, point: np.ndarray) -> tuple[int, ...]:
    """Index (Z, Y, X) of the smallest distance between ``positions`` (3, ...) and ``point``."""
    offset = positions - point.astype(np.float32)[:, None, None, None]
    dist2 = np.einsum("k...,k...->...", offset, offset)
    return tuple(int(i) for i in np.unravel_index(int(np.argmin(dist2)), dist2.shape))
