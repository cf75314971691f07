"""One phantom case: its identifier, files, affine, random generator and arrays.

:func:`make_case` makes a realistic BraTS-like case from the deformed MNI152 brain
(``kind="brats"``, :mod:`partseg.phantom.realistic`), or draws the synthetic ellipsoidal head,
paints a tumor (``kind="brats-simple"``) or vessels and sacs (``kind="aneurysm"``) into its
tissue map, renders each channel and maps the tissues to the labels of the seg file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from partseg.errors import ConfigError
from partseg.phantom.anatomy import Head, Tissue
from partseg.phantom.realistic import make_realistic
from partseg.phantom.render import CONTRAST, render_channel
from partseg.phantom.tumor import add_tumor
from partseg.phantom.vessels import add_vessels

__all__ = [
    "BRATS_KINDS",
    "CHANNELS",
    "DEFAULT_SHAPE",
    "GENERATOR_VERSION",
    "KINDS",
    "MIN_EDGE",
    "PhantomCase",
    "case_files",
    "case_id",
    "case_rng",
    "check_args",
    "make_case",
    "make_tissue",
    "nifti_affine",
]

#: BraTS 240 x 240 x 155 volume in partseg (Z, Y, X) order.
DEFAULT_SHAPE: tuple[int, int, int] = (155, 240, 240)
#: Channels of each kind, in the order of :attr:`PhantomCase.image`: ``brats`` (realistic
#: anatomy), ``brats-simple`` (the fast synthetic head of the unit tests), ``aneurysm``.
CHANNELS: dict[str, tuple[str, ...]] = {
    "brats": ("t1", "t1ce", "t2", "flair"),
    "brats-simple": ("t1", "t1ce", "t2", "flair"),
    "aneurysm": ("tof",),
}
#: Kinds whose labels are BraTS tumour labels {0, 1, 2, 4}.
BRATS_KINDS: tuple[str, ...] = ("brats", "brats-simple")
KINDS: tuple[str, ...] = tuple(CHANNELS)
#: Version of the generators: bumped whenever a kind makes other data for the same arguments
#: (2: ``brats`` became the realistic kind, the former ``brats`` is ``brats-simple``).
GENERATOR_VERSION = 2
#: Smallest edge length that still holds a head with a visible tumor.
MIN_EDGE = 16

#: Value of each tissue in the seg file: BraTS labels for brats, {0, 1} for aneurysm.
_LABEL_OF_TISSUE = np.zeros(len(Tissue), dtype=np.uint8)
_LABEL_OF_TISSUE[[Tissue.EDEMA, Tissue.NECROSIS, Tissue.ENHANCING, Tissue.SAC]] = [2, 1, 4, 1]


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """One synthetic case, arrays in partseg order.

    Attributes:
        case_id: e.g. ``"Phantom_001"``.
        image: float32 (C, Z, Y, X), integer-valued, 0 outside the head, channels in
            ``channels`` order.
        label: uint8 (Z, Y, X) with BraTS values {0, 1, 2, 4}, or {0, 1} for aneurysm.
        channels: ``("t1", "t1ce", "t2", "flair")`` or ``("tof",)``.
        affine: (4, 4) float64 voxel-to-world matrix of the NIfTI (X, Y, Z) array (RAS; 1 mm,
            or the isotropic voxel of a realistic case smaller than BraTS).
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


def nifti_affine(shape: Sequence[int], spacing: float = 1.0) -> np.ndarray:
    """Return the RAS affine of a (Z, Y, X) volume of ``spacing`` mm voxels, centred on 0.

    The NIfTI array is (X, Y, Z): X runs left -> right, Y posterior -> anterior,
    Z inferior -> superior; voxel ((X-1)/2, (Y-1)/2, (Z-1)/2) sits at the origin.

    Example:
        >>> nifti_affine((3, 5, 7))[:3, 3].tolist()
        [-3.0, -2.0, -1.0]
        >>> nifti_affine((3, 5, 7), 2.0)[:3, 3].tolist()
        [-6.0, -4.0, -2.0]
    """
    affine = np.diag([spacing, spacing, spacing, 1.0]).astype(np.float64)
    affine[:3, 3] = [-(n - 1) / 2.0 * spacing for n in reversed(tuple(shape))]
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
        shape: (Z, Y, X) volume size in voxels; default the BraTS 155 x 240 x 240. Voxels
            are 1 mm, except for ``brats`` grids smaller than BraTS: these hold the BraTS
            field of view in larger isotropic voxels (e.g. 3.75 mm for 48 x 64 x 64).
        seed: data-set seed (>= 0); the case draws from a generator seeded by (seed, index).
        kind: ``"brats"`` (4 MRI channels of a deformed real brain with a glioma, tumor
            labels {0, 1, 2, 4}), ``"brats-simple"`` (the same channels and labels on a fast
            synthetic ellipsoidal head) or ``"aneurysm"`` (one TOF channel, labels {0, 1}).
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
    shape = check_args(index, shape, seed, kind, prefix)
    channels = CHANNELS[kind]
    if kind == "brats":
        case = make_realistic(case_rng(seed, index), shape, channels)
        affine = nifti_affine(shape, case.spacing)
        return PhantomCase(case_id(index, prefix), case.image, case.label, channels, affine)
    tissue, head, rng = _draw_anatomy(index, shape, seed, kind)
    image = np.stack([render_channel(tissue, head, CONTRAST[name], rng) for name in channels])
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
    shape = check_args(index, shape, seed, kind)
    if kind == "brats":
        return make_realistic(case_rng(seed, index), shape, CHANNELS[kind], True).tissue
    return _draw_anatomy(index, shape, seed, kind)[0]


def _draw_anatomy(
    index: int, shape: tuple[int, int, int], seed: int, kind: str
) -> tuple[np.ndarray, Head, np.random.Generator]:
    """Tissue map, head and the generator, positioned to draw the rendering next."""
    rng = case_rng(seed, index)
    head = Head.draw(shape, rng)
    tissue = head.tissue_map()  # (Z, Y, X) uint8 Tissue codes
    if kind == "brats-simple":
        add_tumor(tissue, head, rng)
    else:
        add_vessels(tissue, head, rng)
    return tissue, head, rng


def check_args(
    index: int, shape: Sequence[int], seed: int, kind: str, prefix: str = "Phantom"
) -> tuple[int, int, int]:
    """Check the arguments of :func:`make_case` and return ``shape`` as three ints.

    Raises:
        ConfigError: unknown kind, shape not three edges of at least :data:`MIN_EDGE`, prefix
            that is not a plain folder name, or negative index or seed.
    """
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
