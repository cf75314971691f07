"""The two sides of an evaluation (PRED and GT): finding their cases and reading their labels.

A side is a NIfTI file, a folder (found by :mod:`partseg.evaluation.discovery`: every layout
ingest knows, or plain folders of NIfTI files), or a partseg store. NIfTI case ids drop
``.nii[.gz]`` and one trailing ``_seg``, ``-seg`` or ``_pred``; store cases keep their ids.
:func:`check_order` refuses PRED and GT given the wrong way round.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from partseg.errors import InputError
from partseg.evaluation.conventions import Convention, brats_2023_hint, of_store
from partseg.evaluation.discovery import (
    PRED_SUFFIXES,
    case_id_from_name,
    find_files,
    is_nifti,
    nifti_stem,
)
from partseg.evaluation.warn import Warn, default_warn

__all__ = [
    "Side",
    "case_id_from_name",
    "check_order",
    "match_cases",
    "max_distance",
    "open_side",
    "pair_single_files",
    "read_labels",
    "read_nifti_labels",
]


@dataclass(frozen=True)
class Side:
    """One side (PRED or GT) of the comparison: NIfTI files by case id, or a store.

    Attributes:
        label: ``"PRED"`` or ``"GT"`` (used in messages).
        root: the path or URL given for this side.
        files: case id -> NIfTI file (empty for a store).
        store: the opened :class:`partseg.store.Store`, or None.
        convention: what its label values mean, when its layout, dataset.json or store says.
        what: what was found, for messages.
        gt_like: why it looks like ground truth (a raw dataset with scans), or None.
        pred_like: why it looks like predictions (a prediction folder or file names), or None.
    """

    label: str
    root: str
    files: dict[str, Path] = field(default_factory=dict)
    store: Any = None
    convention: Convention | None = None
    what: str = ""
    gt_like: str | None = None
    pred_like: str | None = None

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


def _looks_like_store(text: str) -> bool:
    if "://" in text and not text.startswith("file://"):
        return True
    path = Path(text.removeprefix("file://"))
    return path.is_dir() and (path / "zarr.json").is_file()


def _single_file(path: Path, label: str) -> Side:
    """One NIfTI file: its own case; a ``-seg`` name hints at BraTS 2023 labels."""
    if not is_nifti(path):
        raise InputError("-", path, f"{label} is not a NIfTI file (.nii/.nii.gz)")
    stem = nifti_stem(path.name)
    if stem.endswith("_probabilities"):
        raise InputError(
            "-", path, f"{label} holds probabilities, not labels", "pass the label file"
        )
    pred_like = f"its name {path.name} ends with _pred" if stem.endswith(PRED_SUFFIXES) else None
    files = {case_id_from_name(path.name): path}
    return Side(
        label, str(path), files, None, brats_2023_hint(path), "a NIfTI file", None, pred_like
    )


def open_side(text: str | os.PathLike, label: str) -> Side:
    """Find the cases of PRED or GT: a NIfTI file, a folder of them, or a store."""
    text = os.fspath(text)
    if _looks_like_store(text):
        from partseg.store import open_store

        store = open_store(text)
        return Side(label, text, store=store, convention=of_store(store), what="a partseg store")
    path = Path(text)
    if path.is_file():
        return _single_file(path, label)
    if path.is_dir():
        found = find_files(path, label)
        return Side(label, text, found.files, None, found.convention, found.what, found.gt_like,
                    found.pred_like)  # fmt: skip
    raise InputError("-", path, f"{label} does not exist", "check the path")


def check_order(pred: Side, gt: Side) -> None:
    """Refuse PRED and GT given the wrong way round, on signals that do not mislead.

    Signals: a side that is a raw dataset with scans (or the ``labelsTr`` folder of one) is
    ground truth; a folder that ``partseg predict`` or nnU-Net wrote (their record files) or
    files named ``*_pred`` are predictions. Two sides of the same kind (two ground truths, two
    predictions: an agreement study) are accepted.

    Raises:
        InputError: GT looks like predictions and PRED does not, or PRED looks like ground truth
            and GT does not; the message names both sides and the command with them swapped.
    """
    reasons = []
    if gt.pred_like and not pred.pred_like:
        reasons.append(f"GT {gt.root} looks like predictions ({gt.pred_like})")
    if pred.gt_like and not gt.gt_like:
        reasons.append(f"PRED {pred.root} looks like ground truth ({pred.gt_like})")
    if reasons:
        raise InputError(
            "-",
            f"{pred.root} vs {gt.root}",
            f"PRED and GT look swapped: {'; '.join(reasons)}. partseg evaluate takes the "
            "prediction first (PRED GT); nnU-Net's nnUNetv2_evaluate_folder takes the ground "
            "truth first",
            f"name the sides: partseg evaluate --pred {gt.root} --gt {pred.root}",
        )


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


def max_distance(side: Side, case_id: str) -> float | None:
    """HD/HD95 of a target missing on one side: the original image's diagonal for a store case
    (cropped at ingest); None for NIfTI files, which are the original image."""
    if side.store is None:
        return None
    from partseg.metrics import original_diagonal

    case = side.store[case_id]
    return original_diagonal(case.attrs, case.shape, case.spacing)


def read_labels(side: Side, case_id: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """Labels of one case of one side: original values (NIfTI) or class ids (store)."""
    if side.store is None:
        return read_nifti_labels(side.files[case_id], case_id)
    case = side.store[case_id]
    label = case.read_label()
    if label is None:
        raise InputError(case_id, side.where(case_id), f"the {side.label} store case has no label")
    return label.astype(np.int64), tuple(case.spacing)
