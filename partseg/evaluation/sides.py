"""The two sides of an evaluation (PRED and GT): finding their cases and reading their labels.

A side is a NIfTI file, a folder of NIfTI files (directly inside, or ``*_seg`` / ``*_pred`` files
anywhere below), or a partseg store. NIfTI case ids drop ``.nii[.gz]`` and one trailing ``_seg``
or ``_pred``; store cases keep their ids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from partseg.errors import InputError
from partseg.evaluation.warn import Warn, default_warn

__all__ = [
    "Side",
    "case_id_from_name",
    "match_cases",
    "open_side",
    "pair_single_files",
    "read_labels",
    "read_nifti_labels",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ID_SUFFIXES = ("_seg", "_pred")


def case_id_from_name(name: str) -> str:
    """The case id of a NIfTI file name.

    Example:
        >>> case_id_from_name("BraTS20_Training_001_seg.nii.gz")
        'BraTS20_Training_001'
    """
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix in ID_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


@dataclass(frozen=True)
class Side:
    """One side (PRED or GT) of the comparison: NIfTI files by case id, or a store.

    Attributes:
        label: ``"PRED"`` or ``"GT"`` (used in messages).
        root: the path or URL given for this side.
        files: case id -> NIfTI file (empty for a store).
        store: the opened :class:`partseg.store.Store`, or None.
    """

    label: str
    root: str
    files: dict[str, Path] = field(default_factory=dict)
    store: Any = None

    @property
    def case_ids(self) -> list[str]:
        """Case ids in the order of the folder listing or the store."""
        if self.store is not None:
            return list(self.store.case_ids)
        return list(self.files)

    @property
    def is_nifti(self) -> bool:
        """True for NIfTI files (original label values), False for a store (class ids)."""
        return self.store is None

    def where(self, case_id: str) -> str:
        """The file (or ``store#case``) that holds ``case_id``."""
        if self.store is not None:
            return f"{self.root}#{case_id}"
        return str(self.files[case_id])


def _nifti_folder(root: Path, label: str) -> dict[str, Path]:
    files = sorted(p for p in root.iterdir() if p.is_file() and _is_nifti(p))
    if not files:
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and _is_nifti(p)
            and case_id_from_name(p.name) != p.name.split(".")[0]  # has a _seg/_pred suffix
        )
    if not files:
        raise InputError(
            "-",
            root,
            f"{label} folder holds no NIfTI files (.nii/.nii.gz) and no *_seg/*_pred files "
            "below it",
            "point to the folder with the label files",
        )
    found: dict[str, Path] = {}
    for path in files:
        case_id = case_id_from_name(path.name)
        if case_id in found:
            raise InputError(
                case_id,
                path,
                f"two {label} files have the same case id (the other is {found[case_id]})",
                "keep one label file per case in the folder",
            )
        found[case_id] = path
    return found


def _looks_like_store(text: str) -> bool:
    if "://" in text and not text.startswith("file://"):
        return True
    path = Path(text.removeprefix("file://"))
    return path.is_dir() and (path / "zarr.json").is_file()


def open_side(text: str | os.PathLike, label: str) -> Side:
    """Find the cases of PRED or GT: a NIfTI file, a folder of them, or a store."""
    text = os.fspath(text)
    if _looks_like_store(text):
        from partseg.store import open_store

        return Side(label, text, store=open_store(text))
    path = Path(text)
    if path.is_file():
        if not _is_nifti(path):
            raise InputError("-", path, f"{label} is not a NIfTI file (.nii/.nii.gz)")
        return Side(label, text, files={case_id_from_name(path.name): path})
    if path.is_dir():
        return Side(label, text, files=_nifti_folder(path, label))
    raise InputError("-", path, f"{label} does not exist", "check the path")


def pair_single_files(pred: Side, gt: Side) -> Side:
    """PRED renamed to the GT's case id when both sides are single NIfTI files, else PRED."""
    single = pred.is_nifti and gt.is_nifti and len(pred.files) == len(gt.files) == 1
    if single and Path(pred.root).is_file() and Path(gt.root).is_file():
        return replace(pred, files={gt.case_ids[0]: next(iter(pred.files.values()))})
    return pred


def match_cases(
    pred: Side, gt: Side, allow_missing: bool, warn: Warn | None = None
) -> tuple[list[str], list[str]]:
    """Case ids present on both sides (GT order) and the ids skipped (only on one side).

    Raises:
        InputError: cases on one side only (unless ``allow_missing``), or no common case.
    """
    pred_ids, gt_ids = set(pred.case_ids), gt.case_ids
    both = [c for c in gt_ids if c in pred_ids]
    only_gt = [c for c in gt_ids if c not in pred_ids]
    only_pred = sorted(pred_ids - set(gt_ids))
    skipped = only_gt + only_pred
    if not skipped and not both:
        raise InputError("-", f"{pred.root} vs {gt.root}", "no case to evaluate on either side")
    if not skipped:
        return both, []
    message = "; ".join(
        f"{len(ids)} case(s) only in {side}: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
        for ids, side in ((only_gt, f"GT {gt.root}"), (only_pred, f"PRED {pred.root}"))
        if ids
    )
    if not allow_missing or not both:
        raise InputError(
            skipped[0],
            f"{pred.root} vs {gt.root}",
            f"cases do not match: {message}",
            "pass --allow-missing to skip them" if both else "no case is on both sides",
        )
    (warn or default_warn)(f"skipping {message}")
    return both, skipped


def read_nifti_labels(path: Path, case_id: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """Integer labels in partseg axis order ((Z, Y, X) or (Y, X)) and the matching spacing."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)  # (X, Y, Z) file order
    except Exception as err:  # nibabel raises many types for broken files
        raise InputError(case_id, path, f"cannot read NIfTI file: {err}") from err
    zooms = tuple(float(z) for z in img.header.get_zooms())
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise InputError(case_id, path, f"labels must be 2D or 3D, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise InputError(case_id, path, "label values are not whole numbers")
        data = rounded
    labels = np.ascontiguousarray(data.astype(np.int64).T)  # (X, Y, Z) -> (Z, Y, X)
    return labels, tuple(reversed(zooms[: data.ndim]))


def read_labels(side: Side, case_id: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """Labels of one case of one side: original values (NIfTI) or class ids (store)."""
    if side.store is None:
        return read_nifti_labels(side.files[case_id], case_id)
    case = side.store[case_id]
    label = case.read_label()
    if label is None:
        raise InputError(case_id, side.where(case_id), f"the {side.label} store case has no label")
    return label.astype(np.int64), tuple(case.spacing)
