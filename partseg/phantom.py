"""Synthetic BraTS-like and aneurysm-like cases ("phantoms") written as NIfTI.

A phantom is a head (scalp and skull shells around a brain of CSF, grey and white matter with
two lateral ventricles) rendered with the contrasts a radiologist expects:

* ``kind="brats"``: four channels (t1, t1ce, t2, flair) and a tumor of random position, size and
  irregular shape, labelled in the BraTS convention: 2 edema around a core made of 4 enhancing
  rim and 1 necrotic / non-enhancing centre. Averaged over cases the classes take about 98 %
  background, 1 % edema and 0.3-0.5 % each of labels 1 and 4, as in BraTS 2020.
* ``kind="aneurysm"``: one TOF-MRA-like channel (tof) of bright tortuous vessel tubes on a dark
  brain, with 1-3 tiny saccular blobs attached to vessels, labelled 1 (about 1e-5 of the voxels
  at the default size: the extreme imbalance of the aneurysm challenges).

Every modality carries a smooth multiplicative bias field, Rician noise and a per-case intensity
scale; voxels outside the head are exactly 0 and voxels inside are >= 1, so the non-zero mask
of any channel is the head. Intensities are integer-valued (written as int16 like BraTS).

Case ``index`` draws from a random generator seeded by ``(seed, index)``: the same seed gives
identical files and adding cases never changes the earlier ones.

Example:
    >>> case = make_case(0, shape=(32, 48, 48), seed=1)
    >>> case.case_id, case.image.shape, case.channels
    ('Phantom_001', (4, 32, 48, 48), ('t1', 't1ce', 't2', 'flair'))
    >>> sorted(int(v) for v in np.unique(case.label))
    [0, 1, 2, 4]
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np

from partseg.errors import ConfigError

#: BraTS 240 x 240 x 155 volume in partseg (Z, Y, X) order.
DEFAULT_SHAPE: tuple[int, int, int] = (155, 240, 240)
#: Channels of each kind, in the order of :attr:`PhantomCase.image`.
CHANNELS: dict[str, tuple[str, ...]] = {
    "brats": ("t1", "t1ce", "t2", "flair"),
    "aneurysm": ("tof",),
}
KINDS: tuple[str, ...] = tuple(CHANNELS)
#: Smallest edge length that still holds a head with a visible tumor.
MIN_EDGE = 16


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


#: Relative intensity of each tissue (rows, in :class:`Tissue` order) per channel.
#: T1: dark core and necrosis; T1ce: bright enhancing rim; T2: bright edema and CSF;
#: FLAIR: bright edema, dark CSF. TOF: bright flowing blood on a dark brain.
_CONTRAST: dict[str, np.ndarray] = {
    #                        bg    scalp skull csf   grey  white edema necro enh   vessel sac
    "t1": np.array([0.0, 1.25, 0.12, 0.30, 0.70, 1.00, 0.72, 0.32, 0.85, 0.0, 0.0]),
    "t1ce": np.array([0.0, 1.25, 0.12, 0.30, 0.72, 1.00, 0.76, 0.38, 1.90, 0.0, 0.0]),
    "t2": np.array([0.0, 0.90, 0.10, 1.90, 0.80, 0.55, 1.40, 1.65, 1.05, 0.0, 0.0]),
    "flair": np.array([0.0, 0.90, 0.10, 0.15, 0.80, 0.60, 1.60, 0.55, 1.10, 0.0, 0.0]),
    "tof": np.array([0.0, 0.55, 0.05, 0.08, 0.30, 0.25, 0.0, 0.0, 0.0, 1.00, 0.90]),
}
#: Value of each tissue in the seg file: BraTS labels for brats, {0, 1} for aneurysm.
_LABEL_OF_TISSUE = np.zeros(len(Tissue), dtype=np.uint8)
_LABEL_OF_TISSUE[[Tissue.EDEMA, Tissue.NECROSIS, Tissue.ENHANCING, Tissue.SAC]] = [2, 1, 4, 1]

#: Shell boundaries in units of the head's normalised ellipsoid radius (1 = outer scalp).
_SKULL_OUTER, _SKULL_INNER, _BRAIN_OUTER = 0.95, 0.89, 0.86
#: Cortex thickness and sulcus depth in units of the brain's normalised radius.
_CORTEX, _SULCUS_DEPTH = 0.05, 0.16
#: Whole tumor volume as a fraction of the parenchyma (mean 0.13 -> about 1.8 % of the box).
_TUMOR_OF_BRAIN = (0.08, 0.175)
#: Fewest voxels of each tumor label in a brats case, whatever the shape.
_MIN_LABEL_VOXELS = 20


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """One synthetic case, arrays in partseg order.

    Attributes:
        case_id: e.g. ``"Phantom_001"``.
        image: float32 (C, Z, Y, X), integer-valued, 0 outside the head, channels in
            ``channels`` order.
        label: uint8 (Z, Y, X) with BraTS values {0, 1, 2, 4}, or {0, 1} for aneurysm.
        channels: ``("t1", "t1ce", "t2", "flair")`` or ``("tof",)``.
        affine: (4, 4) float64 voxel-to-world matrix of the NIfTI (X, Y, Z) array (1 mm, RAS).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    channels: tuple[str, ...]
    affine: np.ndarray


def case_id(index: int, prefix: str = "Phantom") -> str:
    """Return the identifier of case ``index`` (0-based): ``case_id(0) == "Phantom_001"``."""
    return f"{prefix}_{index + 1:03d}"


def case_files(case_dir: Path, identifier: str, kind: str = "brats") -> list[Path]:
    """Return the NIfTI files of a case in the BraTS 2020 layout: channels, then ``_seg``."""
    names = [*CHANNELS[kind], "seg"]
    return [Path(case_dir) / f"{identifier}_{name}.nii.gz" for name in names]


def nifti_affine(shape: Sequence[int]) -> np.ndarray:
    """Return the 1 mm RAS affine of a (Z, Y, X) volume, centred on world (0, 0, 0).

    The NIfTI array is (X, Y, Z): X runs left -> right, Y posterior -> anterior,
    Z inferior -> superior; voxel ((X-1)/2, (Y-1)/2, (Z-1)/2) sits at the origin.

    Example:
        >>> nifti_affine((3, 5, 7))[:3, 3].tolist()
        [-3.0, -2.0, -1.0]
    """
    affine = np.eye(4, dtype=np.float64)
    affine[:3, 3] = [-(n - 1) / 2.0 for n in reversed(tuple(shape))]
    return affine


def case_rng(seed: int, index: int) -> np.random.Generator:
    """Return the random generator of case ``index``: depends on ``(seed, index)`` only."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index,)))


def make_case(
    index: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    seed: int = 0,
    kind: str = "brats",
    prefix: str = "Phantom",
) -> PhantomCase:
    """Synthesise case ``index`` of a phantom data set.

    Args:
        index: 0-based case number; the identifier is ``f"{prefix}_{index + 1:03d}"``.
        shape: (Z, Y, X) volume size in voxels (1 mm each); default the BraTS 155 x 240 x 240.
        seed: data-set seed (>= 0); the case draws from a generator seeded by (seed, index).
        kind: ``"brats"`` (4 MRI channels, tumor labels {0, 1, 2, 4}) or ``"aneurysm"``
            (one TOF channel, labels {0, 1}).
        prefix: identifier prefix.

    Returns:
        The case, image float32 (C, Z, Y, X) and label uint8 (Z, Y, X).

    Raises:
        ConfigError: bad shape, kind, index or seed.

    Example:
        >>> case = make_case(2, shape=(24, 32, 32), kind="aneurysm", prefix="Tof")
        >>> case.case_id, case.image.shape, sorted(np.unique(case.label).tolist())
        ('Tof_003', (1, 24, 32, 32), [0, 1])
    """
    shape = _check_args(index, shape, seed, kind, prefix)
    tissue, head, rng = _draw_anatomy(index, shape, seed, kind)
    channels = CHANNELS[kind]
    image = np.stack([_render(tissue, head, _CONTRAST[name], rng) for name in channels])
    label = _LABEL_OF_TISSUE[tissue]
    return PhantomCase(case_id(index, prefix), image, label, channels, nifti_affine(shape))


def make_tissue(
    index: int, shape: Sequence[int] = DEFAULT_SHAPE, seed: int = 0, kind: str = "brats"
) -> np.ndarray:
    """Return the uint8 (Z, Y, X) :class:`Tissue` map that :func:`make_case` renders.

    Useful to check contrasts per tissue (e.g. white matter, which the label does not mark).

    Example:
        >>> tissue = make_tissue(0, (24, 32, 32))
        >>> bool((tissue == Tissue.WHITE).any()), int(tissue[0, 0, 0]) == Tissue.BACKGROUND
        (True, True)
    """
    shape = _check_args(index, shape, seed, kind)
    return _draw_anatomy(index, shape, seed, kind)[0]


def _draw_anatomy(
    index: int, shape: tuple[int, int, int], seed: int, kind: str
) -> tuple[np.ndarray, _Head, np.random.Generator]:
    """Tissue map, head and the generator, positioned to draw the rendering next."""
    rng = case_rng(seed, index)
    head = _Head.draw(shape, rng)
    tissue = head.tissue_map()  # (Z, Y, X) uint8 Tissue codes
    if kind == "brats":
        _add_tumor(tissue, head, rng)
    else:
        _add_vessels(tissue, head, rng)
    return tissue, head, rng


def _check_args(
    index: int, shape: Sequence[int], seed: int, kind: str, prefix: str = "Phantom"
) -> tuple[int, int, int]:
    if kind not in CHANNELS:
        raise ConfigError(f"phantom kind {kind!r} is unknown; choose one of {', '.join(KINDS)}")
    if len(shape) != 3 or min(int(n) for n in shape) < MIN_EDGE:
        raise ConfigError(
            f"phantom shape {tuple(shape)} must be three sizes (Z, Y, X) of at least "
            f"{MIN_EDGE} voxels, e.g. 155 240 240"
        )
    if not prefix or prefix.startswith(".") or any(c in prefix for c in "/\\:"):
        raise ConfigError(
            f"phantom prefix {prefix!r} must be a plain folder name (no '/', '\\', ':' or "
            "leading '.'), e.g. Phantom"
        )
    if index < 0 or seed < 0:
        raise ConfigError(f"phantom index ({index}) and seed ({seed}) must be >= 0")
    z, y, x = (int(n) for n in shape)
    return z, y, x


# ---------------------------------------------------------------------------------------------
# Smooth random fields
# ---------------------------------------------------------------------------------------------


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


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], cells: int) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# Head and brain
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Head:
    """An ellipsoidal head: centre and semi-axes in voxels, (Z, Y, X), and its random fields."""

    shape: tuple[int, int, int]
    centre: np.ndarray  # (3,) float
    axes: np.ndarray  # (3,) float, outer scalp semi-axes
    box: tuple[slice, ...]  # bounding box of the head in the volume
    rho: np.ndarray  # (box) float32 normalised radius, 1 on the scalp surface
    folds: np.ndarray  # (box) float32 smooth noise shaping sulci and the cortex ribbon
    ventricle_scale: float

    @classmethod
    def draw(cls, shape: tuple[int, int, int], rng: np.random.Generator) -> _Head:
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
        folds = _smooth_noise(rng, rho2.shape, cells=max(4, int(max(shape) / 16)))
        scale = float(rng.uniform(0.8, 1.25))
        return cls(shape, centre, axes, box, np.sqrt(rho2), folds, scale)

    def box_coords(self) -> list[np.ndarray]:
        """Per-axis coordinates of the head box, normalised by the brain semi-axes."""
        brain_axes = self.axes * _BRAIN_OUTER
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
        brain_rho = rho / _BRAIN_OUTER * (1.0 + 0.01 * folds)
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
        return self.centre + direction * radius * self.axes * _BRAIN_OUTER


# ---------------------------------------------------------------------------------------------
# Tumor
# ---------------------------------------------------------------------------------------------


def _add_tumor(tissue: np.ndarray, head: _Head, rng: np.random.Generator) -> None:
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
    core_field, edema_field = _tumor_fields(box, centre, radius, rng)
    allowed = parenchyma[box]
    edema_field *= np.where(local == Tissue.WHITE, 1.0, 0.55).astype(np.float32)

    core = _top_k(core_field, allowed, n_core)
    necrosis_field = core_field * np.exp(0.4 * _smooth_noise(rng, local.shape, cells=3))
    necrosis = _top_k(necrosis_field, core, n_necrosis)
    edema_field[core] = np.inf  # the whole tumor contains the core
    whole = _top_k(edema_field, allowed, n_whole)
    local[whole] = Tissue.EDEMA
    local[core] = Tissue.ENHANCING
    local[necrosis] = Tissue.NECROSIS


#: Index expressions that broadcast a 1D coordinate along axis 0, 1 or 2 of a 3D array.
_AXIS_INDEX = (
    (slice(None), None, None),
    (None, slice(None), None),
    (None, None, slice(None)),
)


def _tumor_fields(
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
    core *= np.exp(0.6 * _smooth_noise(rng, shape, cells=4))
    edema *= np.exp(0.7 * _smooth_noise(rng, shape, cells=4))
    return core, edema


def _top_k(field: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# Vessels and aneurysms
# ---------------------------------------------------------------------------------------------


def _add_vessels(tissue: np.ndarray, head: _Head, rng: np.random.Generator) -> None:
    """Paint 5-8 tortuous vessel tubes and 1-3 saccular blobs touching them (in place).

    A sac is a sphere of radius 2-3 voxels centred just off a vessel wall; its label is the
    part outside the vessel and inside the brain. Sacs that would label nothing or miss the
    painted vessel are redrawn.
    """
    brain = (tissue >= Tissue.CSF) & (tissue <= Tissue.WHITE)
    vessels = np.zeros(tissue.shape, dtype=bool)
    curves = []
    for _ in range(int(rng.integers(5, 9))):
        points, radii = _vessel_curve(head, rng)
        _paint_spheres(vessels, points, radii)
        curves.append((points, radii))
    sacs = np.zeros(tissue.shape, dtype=bool)
    wanted, attempts = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])), 0
    while wanted > 0 and attempts < 50:
        attempts += 1
        sac = np.zeros(tissue.shape, dtype=bool)
        centre, radius = _sac_on(curves[int(rng.integers(len(curves)))], rng)
        _paint_spheres(sac, centre[None, :], np.array([radius]))
        sac &= brain
        if (sac & vessels).any() and (sac & ~vessels).any():  # on a wall, labels something
            sacs |= sac & ~vessels
            wanted -= 1
    tissue[vessels & brain] = Tissue.VESSEL
    tissue[sacs] = Tissue.SAC


def _sac_on(
    curve: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Centre (3,) and radius of a saccular blob bulging from the wall of ``curve``."""
    points, radii = curve  # (N, 3), (N,)
    i = int(rng.integers(len(points) // 5, max(len(points) * 4 // 5, len(points) // 5 + 1)))
    tangent = points[min(i + 1, len(points) - 1)] - points[max(i - 1, 0)]
    normal = np.cross(tangent, rng.standard_normal(3))
    normal /= max(float(np.linalg.norm(normal)), 1e-6)
    radius = float(rng.uniform(2.0, 3.0))
    return points[i] + normal * (radii[i] + 0.6 * radius), radius


def _vessel_curve(head: _Head, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A smooth tortuous curve (N, 3) from the skull base outwards, radius 1-3 voxels (N,).

    Six knots walk away from a start point near the base of the brain along a slowly turning
    direction; a cubic spline through them is sampled every third of a voxel.
    """
    from scipy.interpolate import CubicSpline

    brain_axes = head.axes * _BRAIN_OUTER
    start = head.centre + rng.uniform(-0.3, 0.3, 3) * brain_axes
    start[0] = head.centre[0] - rng.uniform(0.2, 0.45) * brain_axes[0]
    direction = rng.standard_normal(3) + np.array([0.8, 0.0, 0.0])  # mostly upwards
    knots = [start]
    for _ in range(5):
        direction = direction / np.linalg.norm(direction) + 0.45 * rng.standard_normal(3)
        candidate = knots[-1] + direction / np.linalg.norm(direction) * 0.3 * brain_axes
        rho = float(np.linalg.norm((candidate - head.centre) / brain_axes))
        if rho > 0.8:  # keep inside the brain
            candidate = head.centre + (candidate - head.centre) * 0.8 / rho
        knots.append(candidate)
    knots_array = np.array(knots)  # (6, 3)
    length = float(np.linalg.norm(np.diff(knots_array, axis=0), axis=1).sum())
    spline = CubicSpline(np.arange(len(knots)), knots_array, axis=0)
    t = np.linspace(0.0, len(knots) - 1, max(int(3 * length), 8))
    radii = np.linspace(rng.uniform(1.5, 3.0), rng.uniform(1.0, 1.5), t.size)
    return spline(t), radii


def _paint_spheres(mask: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> None:
    """Set ``mask`` True within ``radii[i]`` of each ``centres[i]`` (vectorised, clipped)."""
    reach = int(np.ceil(radii.max()))
    offsets = np.stack(
        np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), axis=-1
    ).reshape(-1, 3)  # (K, 3)
    base = np.round(centres).astype(np.int64)  # (N, 3)
    voxels = base[:, None, :] + offsets[None, :, :]  # (N, K, 3)
    dist2 = ((voxels - centres[:, None, :]) ** 2).sum(-1)  # (N, K)
    inside = dist2 <= (radii**2)[:, None]
    inside &= np.all((voxels >= 0) & (voxels < np.asarray(mask.shape)), axis=-1)
    hits = voxels[inside]  # (M, 3)
    mask[hits[:, 0], hits[:, 1], hits[:, 2]] = True


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _render(
    tissue: np.ndarray, head: _Head, contrast: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One channel: tissue contrast x bias field, Rician noise, scale; 0 outside the head.

    Returns float32 (Z, Y, X), integer-valued, >= 1 inside the head.
    """
    local = tissue[head.box]
    levels = (contrast * rng.uniform(0.96, 1.04, contrast.size)).astype(np.float32)
    signal = levels[local]  # (box) float32
    signal *= 1.0 + 0.03 * head.folds  # mild texture that follows the cortical folds
    signal *= np.exp(0.12 * _smooth_noise(rng, local.shape, cells=2))  # bias field
    sigma = np.float32(0.035)
    real = signal + sigma * rng.standard_normal(local.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(local.shape, dtype=np.float32)
    magnitude = np.sqrt(real * real + imag * imag)  # Rician: |signal + complex noise|
    magnitude *= np.float32(rng.uniform(400.0, 1200.0))
    inside = head.rho <= 1.0
    magnitude = np.where(inside, np.clip(np.rint(magnitude), 1.0, 32767.0), 0.0)
    image = np.zeros(tissue.shape, dtype=np.float32)
    image[head.box] = magnitude
    return image


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_case(case: PhantomCase, out_dir: Path) -> Path:
    """Write ``case`` as ``out_dir/<id>/<id>_<channel>.nii.gz`` + ``<id>_seg.nii.gz``, atomically.

    The files are written into ``out_dir/.<id>.partial`` and the folder is renamed when
    complete; an existing case folder is replaced. Images are int16, the seg uint8, arrays
    transposed to NIfTI (X, Y, Z) order, with ``case.affine`` as qform and sform (1 mm).

    Returns:
        The case folder.

    Example:
        >>> import tempfile
        >>> folder = write_case(make_case(0, (24, 32, 32)), Path(tempfile.mkdtemp()))
        >>> sorted(p.name for p in folder.iterdir())[-1]
        'Phantom_001_t2.nii.gz'
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / case.case_id
    partial = out_dir / f".{case.case_id}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    for name, volume in zip(case.channels, case.image, strict=True):
        _save_nifti(partial / f"{case.case_id}_{name}.nii.gz", volume.astype(np.int16), case)
    _save_nifti(partial / f"{case.case_id}_seg.nii.gz", case.label.astype(np.uint8), case)
    _replace_dir(partial, final)
    return final


def _save_nifti(path: Path, volume: np.ndarray, case: PhantomCase) -> None:
    """Save a (Z, Y, X) array as a NIfTI (X, Y, Z) with the case's affine, in millimetres."""
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), case.affine)
    image.set_qform(case.affine, code=1)
    image.set_sform(case.affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)


def _replace_dir(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, replacing an existing ``target`` folder."""
    if not target.exists():
        os.replace(source, target)
        return
    trash = target.with_name(f".{target.name}.old")
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(target, trash)
    os.replace(source, target)
    shutil.rmtree(trash)


def is_complete(case_dir: Path, kind: str = "brats") -> bool:
    """Whether ``case_dir`` holds every file of a ``kind`` case named after the folder."""
    case_dir = Path(case_dir)
    return all(path.is_file() for path in case_files(case_dir, case_dir.name, kind))


def write_phantoms(
    out_dir: Path | str,
    cases: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    seed: int = 0,
    kind: str = "brats",
    prefix: str = "Phantom",
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write ``cases`` phantoms into ``out_dir`` (BraTS 2020 layout), resuming by default.

    A case whose folder already holds all its files is skipped unless ``overwrite``.

    Args:
        out_dir: output folder, created if missing.
        cases: number of cases (ids ``<prefix>_001`` ... ).
        shape, seed, kind, prefix: as in :func:`make_case`.
        overwrite: rewrite complete cases instead of skipping them.
        progress: show a tqdm bar (hidden anyway when stderr is not a terminal).

    Returns:
        The case folders, in index order.

    Example:
        >>> import tempfile
        >>> folders = write_phantoms(tempfile.mkdtemp(), 2, (24, 32, 32), progress=False)
        >>> [f.name for f in folders]
        ['Phantom_001', 'Phantom_002']
    """
    from tqdm import tqdm

    if cases < 1:
        raise ConfigError(f"phantom --cases must be >= 1, got {cases}")
    _check_args(0, shape, seed, kind, prefix)
    out_dir = Path(out_dir)
    folders = []
    bar = tqdm(
        range(cases), desc=f"phantom {kind}", unit="case", disable=None if progress else True
    )
    for index in bar:
        folder = out_dir / case_id(index, prefix)
        if overwrite or not is_complete(folder, kind):
            folder = write_case(make_case(index, shape, seed, kind, prefix), out_dir)
        folders.append(folder)
    return folders
