"""Realistic BraTS-like cases: the MNI152 brain deformed per case, a glioma, MRI contrasts.

One case (``kind="brats"``):

1. the template (:mod:`~partseg.phantom.template`) at the level closest to the case's voxel
   size (:func:`~partseg.phantom.warp.grid_spacing`) is sampled through a random deformation
   with the tumour's mass effect (:mod:`~partseg.phantom.warp`): grey and white matter
   probabilities and the signed distance to the brain surface;
2. the brain's partial volume follows from that distance; CSF is the brain's share left to
   neither grey nor white matter (ventricles, sulci) and a thin layer around the brain; bone
   fills the rest of the head's hull up to a few mm outside it (skull, skull base), then the
   scalp, then air (exactly 0 in every channel); all shell thicknesses are random;
3. a glioma (:mod:`~partseg.phantom.glioma`) replaces the tissues it covers, with a half-voxel
   blur for partial volumes at its borders;
4. each channel renders the tissue fractions with the contrasts of
   :data:`~partseg.phantom.render.CONTRAST`, a shared tissue texture, a bias field, Rician
   noise and a per-scan gain (:func:`~partseg.phantom.render.render_mixture`).

CPU time (``python tools/phantom_montage.py OUT.png --time 3``, one core): 5.0 s per
155 x 240 x 240 case (plus 4.6 s once per process for the 1 mm template; writing its NIfTI files
takes another 4 s), 0.11 s per 48 x 64 x 64 case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from partseg.phantom.anatomy import Tissue
from partseg.phantom.fields import smooth_noise
from partseg.phantom.glioma import Glioma, grow_glioma, tumour_radius_mm
from partseg.phantom.render import CONTRAST, render_mixture
from partseg.phantom.template import Template, load_template
from partseg.phantom.warp import draw_warp, grid_spacing, push_away
from partseg.store.preprocess import foreground_box

__all__ = ["RealisticCase", "make_realistic"]

#: Thickness ranges in mm of the shells around the brain: CSF, skull, scalp.
_SHELLS = ((1.5, 3.0), (5.0, 7.5), (4.0, 6.5))
#: Tissue order of the fraction stack: the first rows of :class:`Tissue` / :data:`CONTRAST`.
_STACK = (
    Tissue.BACKGROUND,
    Tissue.SCALP,
    Tissue.SKULL,
    Tissue.CSF,
    Tissue.GREY,
    Tissue.WHITE,
    Tissue.EDEMA,
    Tissue.NECROSIS,
    Tissue.ENHANCING,
)


@dataclass(frozen=True, eq=False)
class RealisticCase:
    """Arrays of one realistic case, (Z, Y, X) volumes.

    Attributes:
        image: float32 (C, Z, Y, X), integer-valued, 0 outside the head.
        label: uint8, BraTS values {0, 1, 2, 4}.
        tissue: uint8 :class:`Tissue` code of the largest fraction in each voxel (inside the
            head; only when asked for, see :func:`make_realistic`).
        spacing: voxel edge in mm.
    """

    image: np.ndarray
    label: np.ndarray
    tissue: np.ndarray
    spacing: float


def make_realistic(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    channels: tuple[str, ...],
    with_tissue: bool = False,
) -> RealisticCase:
    """Draw one realistic case of ``shape`` with the ``channels`` of :data:`CONTRAST`.

    Args:
        rng: the case's generator.
        shape: (Z, Y, X) grid; its voxel edge is :func:`~partseg.phantom.warp.grid_spacing`.
        channels: names of :data:`CONTRAST` rows, in the order of the image's channels.
        with_tissue: also build :attr:`RealisticCase.tissue` (else all background; the
            argmax over the tissue fractions costs about 0.4 s at the BraTS size).

    Example:
        >>> case = make_realistic(np.random.default_rng(0), (24, 32, 32), ("t1", "flair"))
        >>> case.image.shape, case.spacing, sorted(np.unique(case.label).tolist())
        ((2, 24, 32, 32), 7.5, [0, 1, 2, 4])
    """
    spacing = grid_spacing(shape)
    template = load_template(max(1, int(spacing)))
    fractions, glioma, box = _tissues(rng, shape, template)
    inside = fractions[1:].sum(axis=0) >= 0.5  # the head: at least half a voxel of tissue
    cells = max(3, int(max(inside.shape) / 10))
    fractions *= 1.0 + 0.04 * smooth_noise(rng, inside.shape, cells=cells)  # tissue texture
    bias, noise = float(rng.uniform(0.08, 0.2)), float(rng.uniform(0.02, 0.045))
    image = np.zeros((len(channels), *shape), dtype=np.float32)
    for c, name in enumerate(channels):
        image[(c, *box)] = render_mixture(fractions, CONTRAST[name], inside, rng, bias, noise)
    label = np.zeros(shape, dtype=np.uint8)
    local = label[box][glioma.box]  # a view
    local[glioma.edema], local[glioma.enhancing], local[glioma.necrosis] = 2, 4, 1
    tissue = np.zeros(shape, dtype=np.uint8)
    if with_tissue:
        codes = np.asarray(_STACK, dtype=np.uint8)[np.argmax(fractions, axis=0)]
        tissue[box] = np.where(inside, codes, Tissue.BACKGROUND)
    return RealisticCase(image, label, tissue, spacing)


def _tissues(
    rng: np.random.Generator, shape: tuple[int, int, int], template: Template
) -> tuple[np.ndarray, Glioma, tuple[slice, ...]]:
    """Tissue fractions (T, z, y, x) of the head's box, the glioma in it, and the box."""
    spacing = grid_spacing(shape)
    seed = template.seeds[int(rng.integers(len(template.seeds)))]
    share, radius_mm = tumour_radius_mm(rng, template.parenchyma_ml)
    warp = draw_warp(rng, shape, template)
    distance = warp.sample(template, template.distance)  # mm, > 0 outside the brain
    hull = warp.sample(template, template.hull)  # mm, > 0 outside the brain's smooth hull
    voxel = warp.nearest_voxel(seed)  # where the tumour starts; the push keeps it in place
    warp = push_away(warp, seed, voxel, radius_mm, distance, rng)
    shells = np.cumsum([rng.uniform(*r) for r in _SHELLS])
    box = foreground_box((hull < shells[-1] + spacing / 2.0)[None]).slices()  # the head
    distance, hull = distance[box], hull[box]
    grey = warp.sample(template, template.grey, box)
    white = warp.sample(template, template.white, box)
    brain = _layer(distance, -np.inf, 0.0, spacing)
    scale = np.minimum(1.0, brain / np.maximum(grey + white, 1e-6))  # gm + wm <= brain
    grey *= scale
    white *= scale
    centre = tuple(int(c - s.start) for c, s in zip(voxel, box, strict=True))
    glioma = grow_glioma(rng, white, grey, brain, centre, share)  # type: ignore[arg-type]
    fractions = np.zeros((len(_STACK), *distance.shape), dtype=np.float32)
    outer_csf = _layer(distance, 0.0, shells[0], spacing)  # around the brain ...
    fractions[Tissue.CSF] = brain - grey - white + outer_csf
    fractions[Tissue.GREY], fractions[Tissue.WHITE] = grey, white
    skull = _layer(hull, -np.inf, shells[1], spacing) - brain - outer_csf  # ... bone up to
    fractions[Tissue.SKULL] = np.maximum(skull, 0.0)  # the skull's outer surface, then scalp
    fractions[Tissue.SCALP] = _layer(hull, shells[1], shells[2], spacing)
    _paint_glioma(fractions, glioma, rng)
    return fractions, glioma, box


def _layer(distance: np.ndarray, low: float, high: float, spacing: float) -> np.ndarray:
    """Share of each voxel (edge ``spacing`` mm, centre at ``distance``) between two shells."""
    half = spacing / 2.0
    overlap = np.minimum(distance + half, high) - np.maximum(distance - half, low)
    return np.clip(overlap / spacing, 0.0, 1.0).astype(np.float32)


def _paint_glioma(fractions: np.ndarray, glioma: Glioma, rng: np.random.Generator) -> None:
    """Replace the tissues under the tumour (in place), blurred by half a voxel at its edges.

    The tumour's signal varies by about 12 % within each region (smooth noise): tumours are
    less uniform than normal tissue.
    """
    from scipy import ndimage

    local = fractions[(slice(None), *glioma.box)]  # a view
    masks = {
        Tissue.EDEMA: glioma.edema,
        Tissue.NECROSIS: glioma.necrosis,
        Tissue.ENHANCING: glioma.enhancing,
    }
    soft = {t: ndimage.gaussian_filter(m.astype(np.float32), 0.5) for t, m in masks.items()}
    tumour = np.clip(sum(soft.values()), 0.0, 1.0)
    local[: Tissue.EDEMA] *= 1.0 - tumour
    cells = max(3, int(max(tumour.shape) / 6))
    for t, share in soft.items():
        local[t] = share * (1.0 + 0.12 * smooth_noise(rng, share.shape, cells=cells))
