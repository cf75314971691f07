"""The MNI152 brain template that realistic phantoms deform: shipped inside nilearn's wheel.

nilearn (a partseg dependency) ships the ICBM 2009a nonlinear symmetric template at 1 mm
(197 x 233 x 189 voxels, RAS) as three uint8 NIfTI files in ``nilearn/datasets/data/``: a
skull-stripped T1 (its nonzero voxels are the brain mask) and the grey and white matter
probability maps (0-255). CSF is what the brain mask holds besides grey and white matter
(ventricles, sulci). The files are located through the installed distribution and read with
nibabel: nilearn itself is never imported (its import costs about 3 s).

:func:`load_template` caches one :class:`Template` per level: level ``k`` averages k x k x k
blocks of the 1 mm maps, so a coarse phantom grid samples maps that already hold the partial
volumes of its voxels instead of aliasing the 1 mm anatomy. Positions are in template
millimetres, (Z, Y, X), 0 at the centre of the first 1 mm voxel, whatever the level.

Template: Fonov et al., NeuroImage 2011 and 2009 (ICBM 2009a), Copyright (C) 1993-2009 Louis
Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University;
free to use, copy and distribute with that notice.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from partseg.errors import ConfigError
from partseg.store.preprocess import foreground_box

__all__ = ["TEMPLATE_FILES", "Template", "load_template", "template_dir"]

#: The template's files in ``nilearn/datasets/data/``, by the map they hold.
TEMPLATE_FILES: dict[str, str] = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "grey": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "white": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
#: Tumour seeds: deep white matter (probability above this) ...
_SEED_WHITE = 0.85
#: ... of the cerebrum: above this template height in mm (MNI z = -72 + this; the
#: cerebellum and brain stem lie below) and this far from the midline.
_SEED_MIN_Z, _SEED_MIN_MIDLINE = 75.0, 8.0
#: Levels coarser than this compute the signed distance on their own grid; finer ones
#: upsample it from this level (an exact distance on 8.7 M voxels costs ~3 s, on 1.1 M 0.2 s).
_DISTANCE_LEVEL = 2
#: Gaussian blur (mm) that smooths the brain mask into the hull the skull follows.
_HULL_BLUR = 5.0
#: Template height (mm) below which the head keeps the cross-section it has there (the base
#: of the temporal lobes, MNI z = -32): skull base and neck rather than a closed bag.
_NECK_Z = 40.0


@dataclass(frozen=True, eq=False)
class Template:
    """The template maps at one level, arrays (Z, Y, X) float32.

    Attributes:
        level: 1 mm voxels per voxel edge of the maps (1 = the original grid).
        grey, white: tissue probabilities in [0, 1].
        distance: signed distance to the brain surface in mm, > 0 outside the brain mask.
        hull: signed distance in mm to the brain's smooth hull (the mask closed over the
            fissures and sulci, continued straight down below the temporal lobes), where the
            skull and scalp shells start.
        brain_lo, brain_hi: (3,) template mm of the brain mask's first and last voxel per axis.
        seeds: (N, 3) template mm of deep white matter of the cerebrum, where tumours start.
        parenchyma_ml: volume of grey plus white matter (about 1.68 l: the template brain is
            larger than most).
    """

    level: int
    grey: np.ndarray
    white: np.ndarray
    distance: np.ndarray
    hull: np.ndarray
    brain_lo: np.ndarray
    brain_hi: np.ndarray
    seeds: np.ndarray
    parenchyma_ml: float

    def index(self, mm: np.ndarray) -> np.ndarray:
        """Map template millimetres to (fractional) voxel indices of this level's arrays.

        Example:
            >>> Template(2, *[np.zeros(1)] * 7, 0.0).index(np.array([0.5, 2.5])).tolist()
            [0.0, 1.0]
        """
        if self.level == 1:
            return mm  # the 1 mm grid: positions are indices already
        return (mm - (self.level - 1) / 2.0) / self.level


def template_dir() -> Path:
    """The folder of nilearn's installed data files, found without importing nilearn.

    Raises:
        ConfigError: nilearn is not installed or lacks the template files.
    """
    spec = importlib.util.find_spec("nilearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        data = Path(folder) / "datasets" / "data"
        if all((data / name).is_file() for name in TEMPLATE_FILES.values()):
            return data
    raise ConfigError(
        "realistic brats phantoms need the MNI152 template that nilearn ships "
        f"({TEMPLATE_FILES['t1']}), which was not found: install it with "
        "'pip install nilearn' (a partseg dependency), or use --kind brats-simple"
    )


@lru_cache(maxsize=4)
def load_template(level: int = 1) -> Template:
    """The template averaged over ``level`` ** 3 voxel blocks (cached per process).

    Example:
        >>> template = load_template(4)
        >>> template.grey.shape, bool(template.white.max() <= 1.0)
        ((48, 59, 50), True)
    """
    if level < 1:
        raise ValueError(f"template level must be >= 1, got {level}")
    maps = _read_maps()
    brain = maps["t1"] > 0
    grey, white = (_block_mean(maps[k] / np.float32(255.0), level) for k in ("grey", "white"))
    if level >= _DISTANCE_LEVEL:
        inside = _block_mean(brain, level) >= 0.5
        distance = _signed_distance(inside, level)
        hull = _signed_distance(_hull(inside, level), level)
    else:
        coarse = load_template(_DISTANCE_LEVEL)
        distance = _upsample(coarse.distance, coarse, grey.shape, level)
        hull = _upsample(coarse.hull, coarse, grey.shape, level)
    extent = foreground_box(brain[None])
    lo = np.array(extent.start, dtype=np.float64)
    hi = np.array(extent.stop, dtype=np.float64) - 1.0
    seeds = _seeds(maps["white"], brain)
    parenchyma = float((maps["grey"] + maps["white"]).sum()) / 255.0 / 1000.0  # 1 mm3 voxels
    return Template(level, grey, white, distance, hull, lo, hi, seeds, parenchyma)


@lru_cache(maxsize=1)
def _read_maps() -> dict[str, np.ndarray]:
    """The three 1 mm maps as float32 (Z, Y, X) arrays (NIfTI files are (X, Y, Z))."""
    import nibabel as nib

    folder = template_dir()
    maps = {}
    for key, name in TEMPLATE_FILES.items():
        volume = np.asarray(nib.load(folder / name).dataobj, dtype=np.float32)
        maps[key] = np.ascontiguousarray(volume.transpose(2, 1, 0))
    return maps


def _block_mean(volume: np.ndarray, level: int) -> np.ndarray:
    """Mean over ``level`` ** 3 blocks (edges padded with zeros), float32."""
    volume = volume.astype(np.float32, copy=False)
    if level == 1:
        return volume
    pad = [(0, -n % level) for n in volume.shape]
    padded = np.pad(volume, pad)
    z, y, x = (n // level for n in padded.shape)
    blocks = padded.reshape(z, level, y, level, x, level)
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def _signed_distance(inside: np.ndarray, level: int) -> np.ndarray:
    """Distance in mm from each voxel centre to the mask surface: > 0 outside, < 0 inside.

    The surface lies half-way between the last voxel inside and the first outside, so a voxel
    of edge ``s`` centred at distance ``d`` is ``clip(0.5 - d / s, 0, 1)`` inside the mask.
    """
    from scipy import ndimage

    outside = ndimage.distance_transform_edt(~inside, sampling=level)
    within = ndimage.distance_transform_edt(inside, sampling=level)
    half = level / 2.0
    return np.where(inside, half - within, outside - half).astype(np.float32)


def _hull(inside: np.ndarray, level: int) -> np.ndarray:
    """The mask smoothed over ~1 cm (fissures and sulci filled) joined with itself."""
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(inside.astype(np.float32), _HULL_BLUR / level)
    hull = inside | (blurred >= 0.3)
    neck = round(_NECK_Z / level)  # the skull base and neck continue below this slice
    hull[:neck] |= hull[neck]
    return hull


def _upsample(
    values: np.ndarray, coarse: Template, shape: tuple[int, ...], level: int
) -> np.ndarray:
    """``values`` of the ``coarse`` level sampled (trilinear) at the voxels of ``level``."""
    from scipy import ndimage

    axes = [
        coarse.index(np.arange(n) * level + (level - 1) / 2.0).astype(np.float32) for n in shape
    ]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    return ndimage.map_coordinates(values, coords, order=1, mode="nearest", output=np.float32)


def _seeds(white: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Template mm of deep white matter voxels of the cerebrum, off the midline."""
    deep = (white >= _SEED_WHITE * 255.0) & brain
    z, y, x = np.nonzero(deep)
    midline = (white.shape[2] - 1) / 2.0
    keep = (z >= _SEED_MIN_Z) & (np.abs(x - midline) >= _SEED_MIN_MIDLINE)
    return np.stack([z[keep], y[keep], x[keep]], axis=1).astype(np.float64)
