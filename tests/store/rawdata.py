"""Tiny raw datasets in every supported layout, written with nibabel / h5py / numpy directly.

Imported by the store tests as ``from rawdata import ...`` (a unique module name, unlike
``conftest``, which several test folders have).

Volumes are 12 x 16 x 20 (Z, Y, X) with a zero border, so the foreground crop is a real box,
and arange-like values, so a wrong axis order or offset shows up as a wrong number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SHAPE = (12, 16, 20)  # (Z, Y, X)
FOREGROUND = (slice(2, 10), slice(3, 13), slice(4, 17))  # nonzero box of every case
SPACING = (2.0, 1.2, 1.5)  # (Z, Y, X) mm
AFFINE = np.array(
    [[1.5, 0, 0, -10.0], [0, 1.2, 0, 5.0], [0, 0, 2.0, 7.5], [0, 0, 0, 1]], dtype=np.float64
)  # NIfTI convention: columns x, y, z


def make_image(channels: int, seed: int = 0) -> np.ndarray:
    """(C, Z, Y, X) float32: distinct positive values inside FOREGROUND, 0 outside."""
    image = np.zeros((channels, *SHAPE), np.float32)
    values = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) + 1
    for c in range(channels):
        image[c][FOREGROUND] = values[FOREGROUND] * (c + 1) + seed
    return image


def make_label(values: tuple[int, ...] = (1, 2, 4), seed: int = 0) -> np.ndarray:
    """(Z, Y, X) int: one small block per value inside the foreground."""
    label = np.zeros(SHAPE, np.int16)
    for i, v in enumerate(values):
        z = 3 + 2 * i
        label[z : z + 2, 5 + seed : 9 + seed, 6:11] = v
    return label


def save_nifti(path: Path, zyx: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Save a (Z, Y, X) or (C, Z, Y, X) array as NIfTI (X, Y, Z[, C])."""
    import nibabel as nib

    data = zyx.transpose(2, 1, 0) if zyx.ndim == 3 else zyx.transpose(3, 2, 1, 0)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


def write_brats(
    root: Path,
    ids: Sequence[str] = ("B_001", "B_002"),
    flat: bool = False,
    year: int = 2020,
    no_label: Sequence[str] = (),
) -> Path:
    """BraTS 2020 (``_t1 _t1ce _t2 _flair _seg``) or 2023 (``-t1n ... -seg``) naming."""
    names = ("t1", "t1ce", "t2", "flair") if year < 2023 else ("t1n", "t1c", "t2w", "t2f")
    sep = "_" if year < 2023 else "-"
    values = (1, 2, 4) if year < 2023 else (1, 2, 3)
    for k, case in enumerate(ids):
        folder = root if flat else root / case
        folder.mkdir(parents=True, exist_ok=True)
        image = make_image(4, seed=k)
        for c, name in enumerate(names):
            save_nifti(folder / f"{case}{sep}{name}.nii.gz", image[c])
        if case not in no_label:
            save_nifti(folder / f"{case}{sep}seg.nii.gz", make_label(values, seed=k))
    return root


def write_msd(
    root: Path,
    ids: Sequence[str] = ("prostate_00", "prostate_01"),
    nnunet: bool = False,
    test_ids: Sequence[str] = (),
) -> Path:
    """MSD (4D NIfTI, labels {"0": name}) or nnU-Net v2 (``_0000`` files, labels {name: 0})."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k, case in enumerate([*ids, *test_ids]):
        image = make_image(2, seed=k)
        folder = root / ("imagesTr" if case in ids else "imagesTs")
        if nnunet:
            for c in range(2):
                save_nifti(folder / f"{case}_{c:04d}.nii.gz", image[c])
        else:
            save_nifti(folder / f"{case}.nii.gz", image)
        if case in ids:
            save_nifti(root / "labelsTr" / f"{case}.nii.gz", make_label((1, 2), seed=k))
    if nnunet:
        meta = {
            "channel_names": {"0": "T2", "1": "ADC"},
            "labels": {"background": 0, "PZ": 1, "TZ": 2},
            "numTraining": len(ids),
            "file_ending": ".nii.gz",
        }
    else:
        meta = {
            "modality": {"0": "T2", "1": "ADC"},
            "labels": {"0": "background", "1": "PZ", "2": "TZ"},
            "training": [{"image": f"./imagesTr/{c}.nii.gz"} for c in ids],
        }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


#: nnU-Net v2's region-based BraTS labels (Dataset137 style) and their regions_class_order.
NNUNET_BRATS_LABELS = {
    "background": 0,
    "whole_tumor": [1, 2, 3],
    "tumor_core": [2, 3],
    "enhancing_tumor": 3,
}
NNUNET_BRATS_ORDER = [1, 2, 3]


def write_nnunet_regions(
    root: Path,
    ids: Sequence[str] = ("BraTS_00", "BraTS_01"),
    test_ids: Sequence[str] = (),
    order: Sequence[int] | None = NNUNET_BRATS_ORDER,
) -> Path:
    """An nnU-Net v2 raw folder with the region-based BraTS ``dataset.json`` (4 channels named
    as nnU-Net's conversion names them, labels {0, 1, 2, 3}); ``order=None`` leaves out
    ``regions_class_order``."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k, case in enumerate([*ids, *test_ids]):
        image = make_image(4, seed=k)
        folder = root / ("imagesTr" if case in ids else "imagesTs")
        for c in range(4):
            save_nifti(folder / f"{case}_{c:04d}.nii.gz", image[c])
        if case in ids:
            save_nifti(root / "labelsTr" / f"{case}.nii.gz", make_label((1, 2, 3), seed=k))
    meta = {
        "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"},
        "labels": NNUNET_BRATS_LABELS,
        "numTraining": len(ids),
        "file_ending": ".nii.gz",
    }
    if order is not None:
        meta["regions_class_order"] = list(order)
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def write_nnunet_images(
    root: Path, ids: Sequence[str] = ("case_a", "case_b"), channels: int = 2
) -> Path:
    """nnU-Net's flat ``imagesTs``: ``<id>_0000.nii.gz``, ... without dataset.json or labels."""
    root.mkdir(parents=True, exist_ok=True)
    for k, case in enumerate(ids):
        image = make_image(channels, seed=k)
        for c in range(channels):
            save_nifti(root / f"{case}_{c:04d}.nii.gz", image[c])
    return root


def write_hdf5(
    root: Path, ids: Sequence[str] = ("h_0", "h_1"), channels: int = 2, label: bool = True
) -> Path:
    """One ``.h5`` per case: image (C, Z, Y, X) (or (Z, Y, X) for one channel) and label."""
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    for k, case in enumerate(ids):
        with h5py.File(root / f"{case}.h5", "w") as f:
            image = make_image(channels, seed=k)
            dset = f.create_dataset("image", data=image if channels > 1 else image[0])
            dset.attrs["spacing"] = SPACING
            if label:
                f.create_dataset("label", data=make_label((1, 2), seed=k).astype(np.uint8))
    return root


def write_numpy(
    root: Path, ids: Sequence[str] = ("n_0", "n_1"), npz: bool = False, label_suffix: str = "label"
) -> Path:
    """``<id>.npy`` + ``<id>_<label_suffix>.npy`` per case, or ``<id>.npz`` with both."""
    root.mkdir(parents=True, exist_ok=True)
    for k, case in enumerate(ids):
        image, label = make_image(3, seed=k), make_label((1, 2), seed=k)
        if npz:
            np.savez(root / f"{case}.npz", image=image, label=label)
        else:
            np.save(root / f"{case}.npy", image)
            np.save(root / f"{case}_{label_suffix}.npy", label)
    return root


def write_folders(
    root: Path,
    channels: Sequence[str] = ("tof",),
    ids: Sequence[str] = ("Tof_001", "Tof_002"),
    values: tuple[int, ...] = (1,),
) -> Path:
    """One folder per case, ``<id>/<id>_<channel>.nii.gz`` + ``<id>_seg.nii.gz`` (any names).

    The layout of ``partseg phantom --kind aneurysm`` (channel ``tof``); channel ``c`` of
    ``channels`` holds ``make_image(len(channels))[c]``.
    """
    for k, case in enumerate(ids):
        folder = root / case
        folder.mkdir(parents=True, exist_ok=True)
        image = make_image(len(channels), seed=k)
        for c, name in enumerate(channels):
            save_nifti(folder / f"{case}_{name}.nii.gz", image[c])
        save_nifti(folder / f"{case}_seg.nii.gz", make_label(values, seed=k))
    return root
