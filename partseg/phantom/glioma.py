"""A glioma grown in a realistic phantom: necrotic core, enhancing rim, edema along white matter.

The tumour starts at a voxel of deep white matter (:mod:`partseg.phantom.warp` finds it):

* the **core** is the top-k set of merged, noise-deformed Gaussian blobs inside the
  parenchyma (the blobs of :func:`partseg.phantom.tumor.tumor_fields`), its **necrosis** the
  voxels deepest inside the core (distance to its surface times smooth noise), so the
  **enhancing rim** (core minus necrosis) is a shell of varying thickness around it;
* the **edema** is the set of parenchyma voxels that a front leaving the core reaches first,
  with a speed of 1 in white matter, 0.15 in grey matter and 0.02 in CSF (times smooth
  noise): vasogenic edema spreads along the white matter tracts and spares the cortex, so it
  grows fingers into the gyri's white matter instead of a sphere.

Voxel counts are drawn shares of the parenchyma (whole tumour 3-10 %, BraTS-like: 50-170 cm3
in the template's 1.7 l of grey and white matter), so every case has all three labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from partseg.phantom.fields import smooth_noise
from partseg.phantom.tumor import top_k, tumor_fields
from partseg.store.preprocess import foreground_box

__all__ = ["Glioma", "grow_glioma", "tumour_radius_mm"]

#: Whole tumour as a share of the parenchyma; core share of the whole; necrosis share of core.
_WHOLE, _CORE, _NECROSIS = (0.03, 0.10), (0.2, 0.45), (0.2, 0.5)
#: Fewest voxels of each label, whatever the grid (as for the synthetic kind).
_MIN_VOXELS = 20
#: Front speed per tissue: white, grey, CSF.
_SPEED = (1.0, 0.15, 0.02)
#: Coarse front propagation: at most this many voxels across the whole tumour's radius.
_FRONT_RADIUS = 10


@dataclass(frozen=True, eq=False)
class Glioma:
    """The tumour labels of one case inside ``box`` (a view of the case's slices).

    Attributes:
        box: (Z, Y, X) slices of the volume holding the tumour.
        necrosis, enhancing, edema: disjoint boolean masks of the box.
    """

    box: tuple[slice, slice, slice]
    necrosis: np.ndarray
    enhancing: np.ndarray
    edema: np.ndarray


def tumour_radius_mm(rng: np.random.Generator, parenchyma_ml: float) -> tuple[float, float]:
    """Draw the whole tumour's share of the parenchyma; return (share, sphere radius in mm)."""
    share = float(rng.uniform(*_WHOLE))
    radius = (3.0 * share * parenchyma_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    return share, radius


def grow_glioma(
    rng: np.random.Generator,
    white: np.ndarray,
    grey: np.ndarray,
    brain: np.ndarray,
    centre: tuple[int, int, int],
    share: float,
) -> Glioma:
    """Grow the tumour from voxel ``centre`` in the fractions of one case (arrays (Z, Y, X)).

    Example:
        >>> white = np.zeros((20, 20, 20), np.float32); white[3:17, 3:17, 3:17] = 1
        >>> g = grow_glioma(np.random.default_rng(0), white, 0 * white, white, (10, 10, 10), 0.1)
        >>> [int(m.sum()) >= 20 for m in (g.necrosis, g.enhancing, g.edema)]
        [True, True, True]
    """
    parenchyma = (white + grey) >= 0.5
    n_whole = int(share * np.count_nonzero(parenchyma))
    n_core = int(n_whole * rng.uniform(*_CORE))
    n_necrosis = max(int(n_core * rng.uniform(*_NECROSIS)), _MIN_VOXELS)
    n_core = max(n_core, n_necrosis + _MIN_VOXELS)
    n_whole = max(n_whole, n_core + _MIN_VOXELS)
    radius = (3.0 * n_whole / (4.0 * np.pi)) ** (1.0 / 3.0)  # voxels
    box = tuple(
        slice(max(int(c - 2.6 * radius) - 2, 0), min(int(c + 2.6 * radius) + 3, n))
        for c, n in zip(centre, white.shape, strict=True)
    )
    allowed = parenchyma[box]
    core_radius = (3.0 * n_core / (4.0 * np.pi)) ** (1.0 / 3.0)
    core_field, _ = tumor_fields(box, np.asarray(centre, np.float64), core_radius, rng)
    core_field *= np.exp(0.5 * smooth_noise(rng, core_field.shape, cells=6))  # lobulated
    core = top_k(core_field, allowed, n_core)
    depth = _depth(core)  # voxels from the core's surface
    necrosis_field = depth * np.exp(0.35 * smooth_noise(rng, core.shape, cells=5))
    necrosis = top_k(necrosis_field, core, n_necrosis)
    speed = _SPEED[0] * white[box] + _SPEED[1] * grey[box]
    speed += _SPEED[2] * np.clip(brain[box] - white[box] - grey[box], 0.0, 1.0)
    speed *= np.exp(0.6 * smooth_noise(rng, core.shape, cells=6))
    arrival = _arrival(core, np.maximum(speed, 1e-3), radius)
    arrival[core] = -1.0  # the whole tumour contains the core
    whole = top_k(-arrival, allowed, n_whole)
    return Glioma(box, necrosis, core & ~necrosis, whole & ~core)  # type: ignore[arg-type]


def _arrival(start: np.ndarray, speed: np.ndarray, radius: float) -> np.ndarray:
    """Time a front leaving ``start`` needs to reach each voxel (voxel / speed units).

    Computed on a grid coarsened so the whole tumour spans about :data:`_FRONT_RADIUS` voxels
    (a few dozen relaxation sweeps whatever the resolution), then upsampled trilinearly.
    """
    from scipy import ndimage

    factor = max(1, int(np.ceil(radius / _FRONT_RADIUS)))
    coarse_start = _block(start.astype(np.float32), factor) > 0
    coarse_cost = factor / _block(speed, factor)
    time = np.where(coarse_start, 0.0, np.inf).astype(np.float32)
    for sweep in range(4 * _FRONT_RADIUS + 8):
        step = _neighbour_min(time, diagonal=sweep % 2 == 1)
        step += coarse_cost * (1.5 if sweep % 2 else 1.0)
        if not (step < time).any():
            break
        np.minimum(time, step, out=time)
    time = np.where(np.isfinite(time), time, time[np.isfinite(time)].max() * 2 + 1)
    fine = ndimage.zoom(time, factor, order=1, mode="nearest", grid_mode=True)
    return fine[tuple(slice(0, n) for n in start.shape)]


def _depth(mask: np.ndarray) -> np.ndarray:
    """Distance of each voxel of ``mask`` to its surface (0 outside), on its bounding box only."""
    from scipy import ndimage

    box = foreground_box(mask[None]).slices()
    depth = np.zeros(mask.shape, dtype=np.float32)
    depth[box] = ndimage.distance_transform_edt(np.pad(mask[box], 1))[1:-1, 1:-1, 1:-1]
    return depth


def _block(volume: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` ** 3 blocks, the edges padded by repetition."""
    if factor == 1:
        return volume
    pad = [(0, -n % factor) for n in volume.shape]
    padded = np.pad(volume, pad, mode="edge")
    z, y, x = (n // factor for n in padded.shape)
    return padded.reshape(z, factor, y, factor, x, factor).mean(axis=(1, 3, 5))


def _neighbour_min(time: np.ndarray, diagonal: bool) -> np.ndarray:
    """Smallest value among each voxel's 6 face neighbours (or its 26 neighbours)."""
    from scipy import ndimage

    if diagonal:
        return ndimage.minimum_filter(time, size=3, mode="nearest")
    best = np.full(time.shape, np.inf, dtype=time.dtype)
    for axis in range(3):
        lead = [slice(None)] * 3
        lag = [slice(None)] * 3
        lead[axis], lag[axis] = slice(1, None), slice(None, -1)
        np.minimum(best[tuple(lag)], time[tuple(lead)], out=best[tuple(lag)])
        np.minimum(best[tuple(lead)], time[tuple(lag)], out=best[tuple(lead)])
    return best
