"""Connected-component post-processing of label volumes.

* :func:`remove_small_components`: components smaller than ``min_size`` voxels become background
  (the ADAM 2020 winner removed components under 11 voxels).
* :func:`keep_largest_component`: keep only the largest connected foreground component, or the
  largest component of each class.
* :func:`case_nonzero_mask` + :func:`mask_outside`: no foreground outside the head. A store
  normalised with ``zscore-nonzero`` (nnU-Net's BraTS setting, the ingest default for MRI) keeps
  the air at exactly 0 in every channel; the voxels nonzero in any channel, with enclosed holes
  filled (nnU-Net's ``create_nonzero_mask``), are the head, and a prediction outside it is set
  to background. On a ``zscore-all`` store (CT) the outside is not 0, the mask covers the whole
  volume and nothing changes.

Connectivity is ``"full"`` (26-neighbourhood in 3D, 8 in 2D) by default, ``"face"`` for 6 / 4.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from partseg.errors import ConfigError


def _structure(ndim: int, connectivity: str) -> np.ndarray:
    from scipy.ndimage import generate_binary_structure

    if connectivity not in ("full", "face"):
        raise ConfigError(f"connectivity must be 'full' or 'face', got {connectivity!r}")
    return generate_binary_structure(ndim, ndim if connectivity == "full" else 1)


def components(mask: np.ndarray, connectivity: str = "full") -> tuple[np.ndarray, np.ndarray]:
    """Label connected components of a boolean mask.

    Returns:
        ids (same shape, 0 = background, 1..n) and sizes (n + 1,) with sizes[0] = 0.
    """
    from scipy.ndimage import label

    ids, n = label(mask, structure=_structure(mask.ndim, connectivity))
    sizes = np.bincount(ids.ravel(), minlength=n + 1)
    sizes[0] = 0
    return ids, sizes


def _classes(labels: np.ndarray, classes: Iterable[int] | None) -> list[int]:
    if classes is not None:
        return [int(c) for c in classes]
    return [int(c) for c in np.unique(labels) if c != 0]


def remove_small_components(
    labels: np.ndarray,
    min_size: int,
    *,
    per_class: bool = True,
    classes: Iterable[int] | None = None,
    connectivity: str = "full",
) -> np.ndarray:
    """Set components smaller than ``min_size`` voxels to background (0).

    Args:
        labels: (Z, Y, X) (or 2D) integer class ids.
        min_size: smallest component kept, in voxels.
        per_class: components of each class separately; False: of the whole foreground.
        classes: classes to clean (default every foreground class present).
        connectivity: ``"full"`` or ``"face"``.

    Example:
        >>> labels = np.zeros((1, 6), np.uint8); labels[0, :3] = 1; labels[0, 5] = 1
        >>> remove_small_components(labels, 2).tolist()
        [[1, 1, 1, 0, 0, 0]]
    """
    if min_size <= 1:
        return labels.copy()
    out = labels.copy()
    masks = [labels == c for c in _classes(labels, classes)] if per_class else [labels > 0]
    for mask in masks:
        ids, sizes = components(mask, connectivity)
        small = sizes < min_size
        small[0] = False
        out[small[ids]] = 0
    return out


def keep_largest_component(
    labels: np.ndarray,
    *,
    per_class: bool = False,
    classes: Iterable[int] | None = None,
    connectivity: str = "full",
) -> np.ndarray:
    """Keep the largest connected component of the foreground (or of each class).

    Example:
        >>> labels = np.array([[2, 1, 0, 1]], np.uint8)
        >>> keep_largest_component(labels).tolist()
        [[2, 1, 0, 0]]
        >>> keep_largest_component(labels, per_class=True).tolist()
        [[2, 1, 0, 0]]
    """
    out = labels.copy()
    masks = [labels == c for c in _classes(labels, classes)] if per_class else [labels > 0]
    for mask in masks:
        ids, sizes = components(mask, connectivity)
        if len(sizes) <= 2:
            continue
        drop = np.ones(len(sizes), bool)
        drop[0] = False
        drop[int(np.argmax(sizes))] = False
        out[drop[ids]] = 0
    return out


def nonzero_mask(image: np.ndarray, *, fill_holes: bool = True) -> np.ndarray:
    """Voxels nonzero in any channel of a (C, Z, Y, X) image, enclosed holes filled.

    Example:
        >>> image = np.zeros((2, 5, 5, 5), np.float32)
        >>> image[1, 1:4, 1:4, 1:4] = 1; image[1, 2, 2, 2] = 0   # a head with a zero voxel inside
        >>> int(nonzero_mask(image).sum()), int(nonzero_mask(image, fill_holes=False).sum())
        (27, 26)
    """
    mask = np.any(image != 0, axis=0)
    if fill_holes:
        from scipy.ndimage import binary_fill_holes

        mask = binary_fill_holes(mask)
    return mask


def case_nonzero_mask(case: Any, *, slab: int = 32) -> np.ndarray:
    """:func:`nonzero_mask` of a store case (or ArrayCase), read ``slab`` Z slices at a time.

    Only one slab of the image is in memory at a time; the mask is (Z, Y, X) bool.
    """
    from partseg.geometry import Box

    depth, height, width = case.shape
    mask = np.zeros((depth, height, width), bool)
    for z in range(0, depth, slab):
        size = min(slab, depth - z)
        image, _ = case.read(Box((z, 0, 0), (size, height, width)), label=False)
        mask[z : z + size] = nonzero_mask(image, fill_holes=False)
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(mask)


def mask_outside(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``labels`` with every voxel outside ``mask`` set to background (0).

    Example:
        >>> mask_outside(np.array([1, 2, 3]), np.array([True, False, True])).tolist()
        [1, 0, 3]
    """
    if mask.shape != labels.shape:
        raise ConfigError(f"nonzero mask {mask.shape} and labels {labels.shape} differ in shape")
    return np.where(mask, labels, 0).astype(labels.dtype, copy=False)


def postprocess(
    labels: np.ndarray,
    *,
    min_component_size: int = 0,
    keep_largest: bool = False,
    per_class: bool = True,
    connectivity: str = "full",
    inside: np.ndarray | None = None,
) -> np.ndarray:
    """The CLI's post-processing: foreground outside ``inside`` (the head's nonzero mask, see
    :func:`case_nonzero_mask`) removed, small components removed, then the largest kept."""
    if inside is not None:
        labels = mask_outside(labels, inside)
    if min_component_size > 1:
        labels = remove_small_components(
            labels, min_component_size, per_class=per_class, connectivity=connectivity
        )
    if keep_largest:
        labels = keep_largest_component(labels, connectivity=connectivity)
    return labels
