"""The BraTS-like tumor: edema around a core of enhancing rim and necrotic centre.

Each region is the top-k set of a smooth field inside the brain parenchyma, so its voxel count
is exactly the drawn share of the brain.
"""

from __future__ import annotations

import numpy as np

from partseg.phantom.anatomy import Head, Tissue
from partseg.phantom.fields import smooth_noise

__all__ = ["add_tumor", "top_k", "tumor_fields"]

#: Whole tumor volume as a fraction of the parenchyma (mean 0.13 -> about 1.8 % of the box).
_TUMOR_OF_BRAIN = (0.08, 0.175)
#: Fewest voxels of each tumor label in a brats case, whatever the shape.
_MIN_LABEL_VOXELS = 20


def add_tumor(tissue: np.ndarray, head: Head, rng: np.random.Generator) -> None:
    """Paint edema, enhancing rim and necrotic centre into ``tissue`` (in place).

    The regions are top-k sets of smooth fields (a few merged Gaussian blobs deformed by
    low-frequency noise) inside the brain parenchyma, so their voxel counts hit the drawn
    class proportions exactly: whole tumor ``f * brain``, core a share of it, necrosis a share
    of the core; the enhancing rim is core minus necrosis, the edema whole minus core.
    """
    parenchyma = (tissue == Tissue.GREY) | (tissue == Tissue.WHITE)
    n_whole = int(rng.uniform(*_TUMOR_OF_BRAIN) * np.count_nonzero(parenchyma))
    n_core = int(n_whole * rng.uniform(0.3, 0.55))
    n_necrosis = int(n_core * rng.uniform(0.35, 0.6))
    n_necrosis = max(n_necrosis, _MIN_LABEL_VOXELS)
    n_core = max(n_core, n_necrosis + _MIN_LABEL_VOXELS)
    n_whole = max(n_whole, n_core + _MIN_LABEL_VOXELS)

    radius = (3.0 * n_whole / (4.0 * np.pi)) ** (1.0 / 3.0)
    centre = head.random_point(rng, max_rho=0.55)
    box = tuple(
        slice(max(int(c - 2.4 * radius), 0), min(int(c + 2.4 * radius) + 2, n))
        for c, n in zip(centre, tissue.shape, strict=True)
    )
    local = tissue[box]  # a view: painting it paints the volume
    core_field, edema_field = tumor_fields(box, centre, radius, rng)
    allowed = parenchyma[box]
    edema_field *= np.where(local == Tissue.WHITE, 1.0, 0.55).astype(np.float32)

    core = top_k(core_field, allowed, n_core)
    necrosis_field = core_field * np.exp(0.4 * smooth_noise(rng, local.shape, cells=3))
    necrosis = top_k(necrosis_field, core, n_necrosis)
    edema_field[core] = np.inf  # the whole tumor contains the core
    whole = top_k(edema_field, allowed, n_whole)
    local[whole] = Tissue.EDEMA
    local[core] = Tissue.ENHANCING
    local[necrosis] = Tissue.NECROSIS


#: Index expressions that broadcast a 1D coordinate along axis 0, 1 or 2 of a 3D array.
_AXIS_INDEX = (
    (slice(None), None, None),
    (None, slice(None), None),
    (None, None, slice(None)),
)


def tumor_fields(
    box: tuple[slice, ...], centre: np.ndarray, radius: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Core and edema fields over ``box``: merged blobs times log-normal smooth noise."""
    shape = tuple(s.stop - s.start for s in box)
    coords = [np.arange(s.start, s.stop, dtype=np.float32) for s in box]
    n_extra = int(rng.integers(1, 4))
    offsets = rng.standard_normal((n_extra, 3))
    offsets *= (rng.uniform(0.3, 0.8, n_extra) * radius / np.linalg.norm(offsets, axis=1))[:, None]
    centres = np.vstack([centre, centre + offsets])  # (1 + n_extra, 3)
    sigmas = np.concatenate([[0.6], rng.uniform(0.3, 0.55, n_extra)]) * radius
    weights = np.concatenate([[1.0], rng.uniform(0.5, 0.9, n_extra)])
    core = np.zeros(shape, dtype=np.float32)
    edema = np.zeros(shape, dtype=np.float32)
    for c, sigma, weight in zip(centres, sigmas, weights, strict=True):
        d2 = [((g - ci) ** 2)[idx] for g, ci, idx in zip(coords, c, _AXIS_INDEX, strict=True)]
        dist2 = d2[0] + d2[1] + d2[2]
        core += weight * np.exp(-dist2 / (2.0 * sigma**2))
        edema += weight * np.exp(-dist2 / (2.0 * (1.7 * sigma) ** 2))
    core *= np.exp(0.6 * smooth_noise(rng, shape, cells=4))
    edema *= np.exp(0.7 * smooth_noise(rng, shape, cells=4))
    return core, edema


def top_k(field: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` largest values of ``field`` inside ``mask`` (all if fewer)."""
    candidates = np.flatnonzero(mask)
    chosen = np.zeros(field.shape, dtype=bool)
    if k >= candidates.size:
        chosen.flat[candidates] = True
        return chosen
    values = field.flat[candidates]
    keep = np.argpartition(-values, k - 1)[:k]
    chosen.flat[candidates[keep]] = True
    return chosen
