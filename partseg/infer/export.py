"""Put a prediction back into the original scan's geometry and save it as NIfTI.

Ingest cropped, maybe resampled and relabelled each case (see :mod:`partseg.store.preprocess`);
the case attrs record it: ``original_shape`` (Z, Y, X), ``crop_box`` ``{"start", "size"}`` in
original voxels, ``spacing`` / ``original_spacing`` and ``affine`` (NIfTI convention, of the
original file). Export undoes it in reverse order:

1. resample back to ``crop_box.size`` when the store was resampled (labels nearest,
   probabilities trilinear);
2. paste at ``crop_box.start`` into background of ``original_shape`` (probability 1 for class 0;
   foreground probability 0 for a one-channel sigmoid model);
3. map class ids back to the original label values (BraTS: 3 -> 4);
4. transpose (Z, Y, X) -> (X, Y, Z) (probabilities (X, Y, Z, K)) and save with the original
   affine, atomically (temporary name in the same folder, then rename).

The header codes are the source's when ingest recorded them (case attrs ``nifti_header``:
``sform_code``, ``qform_code``, ``qform``, ``xyzt_units``, from the first image file): a BraTS
file's sform 1 / qform 1 stay 1 / 1. Stores made before partseg recorded them (or from
HDF5/NumPy/NRRD) get nibabel's defaults: sform 2 (aligned) with the affine, qform 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partseg.atomic import atomic_path
from partseg.errors import StoreError
from partseg.geometry import Box


def inverse_mapping(label_mapping: Mapping[int, int]) -> np.ndarray:
    """Lookup table class id -> original label value.

    Example:
        >>> inverse_mapping({0: 0, 1: 1, 2: 2, 4: 3}).tolist()
        [0, 1, 2, 4]
    """
    if not label_mapping:
        raise StoreError("the store has no label mapping; re-ingest it with declared labels")
    table = np.zeros(max(label_mapping.values()) + 1, np.int64)
    for original, cls in label_mapping.items():
        table[int(cls)] = int(original)
    return table


def labels_to_original(labels: np.ndarray, label_mapping: Mapping[int, int]) -> np.ndarray:
    """Class ids -> original label values, in the smallest unsigned dtype that holds them.

    Example:
        >>> labels_to_original(np.array([0, 3, 1]), {0: 0, 1: 1, 2: 2, 4: 3}).tolist()
        [0, 4, 1]
    """
    table = inverse_mapping(label_mapping)
    dtype = np.uint8 if table.max() < 256 else np.uint16
    return table.astype(dtype)[labels]


def resize_nearest(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of a (Z, Y, X) array to ``shape`` (voxel centres aligned).

    Example:
        >>> resize_nearest(np.array([[1, 2]]), (1, 4)).tolist()
        [[1, 1, 2, 2]]
    """
    index = []
    for n_src, n_dst in zip(labels.shape, shape, strict=True):
        centres = (np.arange(n_dst) + 0.5) * n_src / n_dst
        index.append(np.clip(np.floor(centres).astype(np.int64), 0, n_src - 1))
    return labels[np.ix_(*index)]


def resize_linear(values: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear (bilinear) resize of (K, *S) float values to (K, *shape)."""
    import torch

    mode = "trilinear" if len(shape) == 3 else "bilinear"
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None]
    out = torch.nn.functional.interpolate(tensor, size=tuple(shape), mode=mode, align_corners=False)
    return out[0].numpy()


def crop_box_of(attrs: Mapping[str, Any], shape: Sequence[int]) -> tuple[Box, tuple[int, ...]]:
    """The crop box and original shape recorded for a case (whole volume when absent)."""
    box = attrs.get("crop_box")
    crop = Box(tuple(box["start"]), tuple(box["size"])) if box else Box.whole(shape)
    original = tuple(int(s) for s in attrs.get("original_shape", crop.stop))
    return crop, original


def labels_to_original_grid(
    labels: np.ndarray, attrs: Mapping[str, Any], label_mapping: Mapping[int, int]
) -> np.ndarray:
    """(Z, Y, X) class ids over the stored case -> original values over the original grid."""
    crop, original = crop_box_of(attrs, labels.shape)
    if tuple(labels.shape) != crop.size:
        labels = resize_nearest(labels, crop.size)
    full = np.zeros(original, labels.dtype)
    full[crop.slices()] = labels
    return labels_to_original(full, label_mapping)


def probabilities_to_original_grid(
    probabilities: np.ndarray, attrs: Mapping[str, Any], *, regions: bool = False
) -> np.ndarray:
    """(K, Z, Y, X) over the stored case -> (K, *original_shape), background outside the crop.

    Background is probability 1 of class 0 for K > 1 softmax classes, and probability 0 of
    every channel for one sigmoid channel (a binary model) or for ``regions`` (one sigmoid per
    region of a region model: no region outside the crop).

    Example:
        >>> attrs = {"crop_box": {"start": [1, 0, 0], "size": [1, 1, 1]}}
        >>> attrs["original_shape"] = [2, 1, 1]
        >>> p = np.full((2, 1, 1, 1), 0.5, np.float32)
        >>> probabilities_to_original_grid(p, attrs)[:, 0, 0, 0].tolist()
        [1.0, 0.0]
        >>> probabilities_to_original_grid(p, attrs, regions=True)[:, 0, 0, 0].tolist()
        [0.0, 0.0]
    """
    crop, original = crop_box_of(attrs, probabilities.shape[1:])
    if tuple(probabilities.shape[1:]) != crop.size:
        probabilities = resize_linear(probabilities, crop.size)
    full = np.zeros((probabilities.shape[0], *original), probabilities.dtype)
    if probabilities.shape[0] > 1 and not regions:
        full[0] = 1
    full[(slice(None), *crop.slices())] = probabilities
    return full


#: NIfTI xform codes: 0 unknown, 1 scanner, 2 aligned, 3 talairach, 4 mni.
_XFORM_CODES = range(5)
_UNITS = ("unknown", "meter", "mm", "micron", "sec", "msec", "usec", "hz", "ppm", "rads")


def header_codes(attrs: Mapping[str, Any], case_id: str = "?") -> dict[str, Any] | None:
    """The source header fields recorded at ingest (``nifti_header``), checked; None if absent.

    Raises:
        StoreError: the record is damaged (codes outside 0-4, a qform that is not 4 x 4
            finite numbers, unknown units); store attrs are untrusted input.

    Example:
        >>> header_codes({"nifti_header": {"sform_code": 1, "qform_code": 1,
        ...     "qform": np.eye(4).tolist(), "xyzt_units": ["mm", "sec"]}})["sform_code"]
        1
    """
    record = attrs.get("nifti_header")
    if record is None:
        return None
    try:
        codes = {k: int(record[k]) for k in ("sform_code", "qform_code")}
        qform = np.asarray(record["qform"], np.float64)
        units = tuple(str(u) for u in record.get("xyzt_units", ("unknown", "unknown")))
        ok = all(c in _XFORM_CODES for c in codes.values()) and qform.shape == (4, 4)
        ok = ok and bool(np.isfinite(qform).all()) and len(units) == 2
        ok = ok and all(u in _UNITS for u in units)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise StoreError(
            f"case {case_id!r}: the recorded NIfTI header {record!r} is damaged (expected sform "
            "and qform codes 0-4, a 4 x 4 qform and units); re-ingest the case"
        )
    return {**codes, "qform": qform, "xyzt_units": units}


def save_nifti(
    path: str | os.PathLike,
    array: np.ndarray,
    affine: np.ndarray,
    header: Mapping[str, Any] | None = None,
) -> Path:
    """Save a (Z, Y, X) or (K, Z, Y, X) partseg array as NIfTI (X, Y, Z[, K]), atomically.

    ``header`` (from :func:`header_codes`) sets the sform code (with ``affine``), the qform
    and its code and the units of the source file; without it nibabel's defaults apply.
    """
    import nibabel as nib

    path = Path(path)
    data = array.transpose(2, 1, 0) if array.ndim == 3 else array.transpose(3, 2, 1, 0)
    image = nib.Nifti1Image(np.ascontiguousarray(data), np.asarray(affine, np.float64))
    if header is not None:
        image.set_qform(header["qform"], code=header["qform_code"])
        image.set_sform(np.asarray(affine, np.float64), code=header["sform_code"])
        image.header.set_xyzt_units(*header["xyzt_units"])
    image.header.set_data_dtype(data.dtype)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(image, tmp)
    return path


def case_affine(case: Any) -> np.ndarray:
    """The original file's affine recorded at ingest (identity scaled by spacing if absent)."""
    affine = getattr(case, "attrs", {}).get("affine")
    if affine is not None:
        return np.asarray(affine, np.float64)
    spacing = tuple(getattr(case, "spacing", (1.0, 1.0, 1.0)))
    return np.diag([spacing[2], spacing[1], spacing[0], 1.0])


def export_case(
    case: Any,
    labels: np.ndarray | None,
    out_dir: str | os.PathLike,
    label_mapping: Mapping[int, int],
    *,
    probabilities: np.ndarray | None = None,
    regions: bool = False,
) -> list[Path]:
    """Write ``OUT/<case>.nii.gz`` (and ``OUT/<case>_probabilities.nii.gz``) in original geometry.

    Args:
        case: the store case predicted (``id``, ``attrs``).
        labels: (Z, Y, X) class ids over the stored (cropped) case; None writes no labels.
        out_dir: output folder (must exist).
        label_mapping: the store's original value -> class id mapping.
        probabilities: optional (K, Z, Y, X) probabilities, saved as float32 NIfTI.
        regions: the probabilities are a region model's sigmoids (0 outside the crop, not
            class 0).

    Example:
        >>> # export_case(store["BraTS_001"], labels, "out", store.label_mapping)
    """
    affine = case_affine(case)
    attrs = getattr(case, "attrs", {})
    header = header_codes(attrs, case.id)
    written: list[Path] = []
    if labels is not None:
        original = labels_to_original_grid(labels, attrs, label_mapping)
        path = Path(out_dir) / f"{case.id}.nii.gz"
        written.append(save_nifti(path, original, affine, header))
    if probabilities is not None:
        full = probabilities_to_original_grid(
            np.asarray(probabilities, np.float32), attrs, regions=regions
        )
        path = Path(out_dir) / f"{case.id}_probabilities.nii.gz"
        written.append(save_nifti(path, full, affine, header))
    return written
