"""Evaluate predicted segmentations against ground truth, case by case, without a command line.

:func:`evaluate_folders` is the entry point (``partseg evaluate`` is a thin layer over it). PRED
and GT are each one of:

* a NIfTI file (``.nii`` / ``.nii.gz``): both must then be files, and they form one case, named
  after the GT file;
* a folder of NIfTI files: the files directly inside, or, when there are none, the files named
  ``*_seg.nii[.gz]`` / ``*_pred.nii[.gz]`` anywhere below (the BraTS layout of one folder per
  case);
* a partseg store (:func:`partseg.store.open_store`), whose label arrays hold class ids.

**Case ids.** A NIfTI file's case id is its name without ``.nii.gz`` / ``.nii`` and then without
one trailing ``_seg`` or ``_pred``: ``BraTS20_Training_001_seg.nii.gz`` and
``BraTS20_Training_001.nii.gz`` are both case ``BraTS20_Training_001``. Store cases keep their
ids. Cases found on one side only are an error listing them, or, with ``allow_missing``, a
warning and are skipped.

**Labels.** NIfTI files hold original label values; they become contiguous class ids by, in
order: an explicit labels map (``0:0,1:1,2:2,4:3``); the label mapping of a store on the other
side; otherwise automatically: BraTS values ({0, 1, 2, 4} with 4 present in some case) map
4 -> 3, anything else is taken as class ids as they are. A dataset mixing label 4 with labels
outside {0, 1, 2, 4} is an error that asks for a labels map (:class:`LabelPolicy`).

**Spacing** comes from the GT (NIfTI pixdim, reordered to (Z, Y, X), or the store case).

**Seams.** Given the folder of ``<case>_probabilities.zarr`` that ``partseg predict
--save-probabilities --probabilities-format zarr`` writes (float16 (K, Z, Y, X), attribute
``core``), each case gets a ``"seam"`` section (:func:`seam_section`) with the reference-free
``seam_index`` of :mod:`partseg.infer.seams` (1.0 = no seam), and, given the same folder from a
``--partition none`` run, the error against that whole-volume reference (``max_abs``,
``mean_abs``, ``changed_label_share``). :func:`partseg.metrics.summarize` summarises it like the
``classes`` and ``regions`` sections.

Only one case is in memory at a time; probabilities are streamed slab by slab.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from partseg.errors import ConfigError, InputError
from partseg.metrics import (
    BRATS_CLASSES,
    BRATS_LABEL_MAPPING,
    BRATS_REGIONS,
    binary_metrics,
    evaluate_case,
    summarize,
)

__all__ = [
    "LabelPolicy",
    "SeamSources",
    "Side",
    "apply_mapping",
    "case_id_from_name",
    "check_seam_files",
    "csv_rows",
    "evaluate_all",
    "evaluate_folders",
    "evaluate_pair",
    "finalize_case",
    "format_table",
    "make_policy",
    "match_cases",
    "open_side",
    "pair_single_files",
    "parse_labels_map",
    "probability_path",
    "read_labels",
    "read_nifti_labels",
    "seam_section",
    "to_csv",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ID_SUFFIXES = ("_seg", "_pred")
CSV_SUMMARY_STATS = ("mean", "std", "median")
#: Result sections that tables and CSV rows list, in this order (when present).
SECTIONS = ("classes", "regions", "seam")
#: The one target of the ``"seam"`` section: the probability maps of all classes together.
SEAM_TARGET = "probabilities"

#: Receives each warning text (e.g. cases skipped); the default issues a ``UserWarning``.
Warn = Callable[[str], None]


def _default_warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# Finding cases
# --------------------------------------------------------------------------------------------


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
    (warn or _default_warn)(f"skipping {message}")
    return both, skipped


# --------------------------------------------------------------------------------------------
# Reading labels
# --------------------------------------------------------------------------------------------


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


def parse_labels_map(text: str) -> dict[int, int]:
    """Parse ``"0:0,1:1,2:2,4:3"`` (original label value : class id).

    Example:
        >>> parse_labels_map("0:0, 1:1, 2:2, 4:3")
        {0: 0, 1: 1, 2: 2, 4: 3}
    """
    mapping: dict[int, int] = {}
    try:
        for item in text.split(","):
            key, value = item.split(":")
            mapping[int(key)] = int(value)
    except ValueError as err:
        raise ConfigError(
            f"--labels-map {text!r} is not a list of value:class pairs like 0:0,1:1,2:2,4:3"
        ) from err
    if sorted(set(mapping.values())) != list(range(max(mapping.values()) + 1)):
        raise ConfigError(f"--labels-map {text!r}: class ids must be contiguous from 0")
    return mapping


def apply_mapping(
    labels: np.ndarray, mapping: Mapping[int, int], case_id: str, where: str
) -> np.ndarray:
    """Map original label values to class ids; unknown values are an InputError.

    Example:
        >>> apply_mapping(np.array([0, 4, 2]), {0: 0, 1: 1, 2: 2, 4: 3}, "c", "c.nii").tolist()
        [0, 3, 2]
    """
    values = np.unique(labels)
    unknown = [int(v) for v in values if int(v) not in mapping]
    if unknown:
        raise InputError(
            case_id,
            where,
            f"label values {unknown} are not in the label mapping {dict(mapping)}",
            "pass --labels-map with every label value",
        )
    lut = np.zeros(int(values.max()) + 1 if values.size else 1, dtype=np.int64)
    for key, value in mapping.items():
        if 0 <= key < lut.size:
            lut[key] = value
    return lut[labels]


# --------------------------------------------------------------------------------------------
# Label policy: which mapping, classes and regions
# --------------------------------------------------------------------------------------------


@dataclass
class LabelPolicy:
    """Turns the labels of each case into class ids and decides classes and regions.

    Mutable on purpose: in ``"auto"`` mode (``mapping`` None) it learns from the cases it sees
    (BraTS while every case fits {0, 1, 2, 4}, identity once one does not; the number of
    classes grows), so the final names and regions are known after the last case.

    Attributes:
        mapping: original label value -> class id (a labels map or a store's), or None (auto).
        class_names: class names by id, or None (decided at the end).
        regions_choice: ``"auto"``, ``"brats"`` or ``"none"``.
    """

    mapping: dict[int, int] | None
    class_names: list[str] | None
    regions_choice: str
    brats_possible: bool = True
    seen_four: bool = False
    max_id: int = 1

    @property
    def is_brats(self) -> bool:
        """True when the labels are (or, in auto mode, look like) BraTS labels."""
        if self.mapping is not None:
            return dict(self.mapping) == dict(BRATS_LABEL_MAPPING)
        return self.brats_possible and self.seen_four

    def to_class_ids(
        self, case_id: str, arrays: Sequence[tuple[np.ndarray, bool, str]]
    ) -> list[np.ndarray]:
        """Map each ``(labels, is_nifti, where)`` of one case to class ids."""
        mapping = self.mapping
        if mapping is None:
            mapping = self._auto_mapping(case_id, arrays)
        out = []
        for labels, is_nifti, where in arrays:
            ids = apply_mapping(labels, mapping, case_id, where) if is_nifti else labels
            if ids.size and ids.min() < 0:
                raise InputError(case_id, where, "negative label values")
            out.append(ids)
            self.max_id = max(self.max_id, int(ids.max()) if ids.size else 0)
        return out

    def _auto_mapping(
        self, case_id: str, arrays: Sequence[tuple[np.ndarray, bool, str]]
    ) -> dict[int, int]:
        values = set().union(*(np.unique(a).tolist() for a, nifti, _ in arrays if nifti))
        if self.brats_possible and values <= set(BRATS_LABEL_MAPPING):
            self.seen_four |= 4 in values
            return dict(BRATS_LABEL_MAPPING)
        if self.seen_four:
            raise InputError(
                case_id,
                arrays[0][2],
                f"label values {sorted(values)} do not fit the BraTS labels {{0, 1, 2, 4}} "
                "that earlier cases had",
                "pass --labels-map, e.g. 0:0,1:1,2:2,4:3",
            )
        self.brats_possible = False
        top = max(values, default=0)
        return {v: v for v in range(int(top) + 1)}

    def n_classes(self) -> int:
        """Classes needed so far (grows in auto mode)."""
        if self.class_names is not None:
            return len(self.class_names)
        return self.max_id + 1

    def final_names(self) -> list[str]:
        """Class names by id once every case is seen."""
        if self.class_names is not None:
            return list(self.class_names)
        if self.is_brats and self.max_id <= 3:
            return list(BRATS_CLASSES)
        top = max(self.max_id, 3) if self.regions_choice == "brats" else self.max_id
        return ["background", *(f"class_{i}" for i in range(1, top + 1))]

    def regions(self) -> dict[str, tuple[int, ...]]:
        """Regions to compute (provisional in auto mode; :meth:`final_regions` decides)."""
        provisional = self.mapping is None and self.brats_possible  # auto mode, BraTS so far
        if self.regions_choice == "brats" or (
            self.regions_choice == "auto" and (provisional or self.is_brats)
        ):
            return dict(BRATS_REGIONS)
        return {}

    def final_regions(self) -> dict[str, tuple[int, ...]]:
        """Regions to report once every case is seen."""
        if self.regions_choice == "brats" or (self.regions_choice == "auto" and self.is_brats):
            return dict(BRATS_REGIONS)
        return {}

    def mapping_description(self) -> dict[str, int] | str:
        """The mapping for a report: ``{"4": 3, ...}``, ``"brats"`` or ``"identity"``."""
        if self.mapping is not None:
            return {str(k): v for k, v in self.mapping.items()}
        return "brats" if self.is_brats else "identity"


def make_policy(
    pred: Side,
    gt: Side,
    *,
    classes: Sequence[str] | None = None,
    labels_map: Mapping[int, int] | str | None = None,
    regions: str = "auto",
) -> LabelPolicy:
    """The label policy from the options and the sides (a store's mapping and classes)."""
    if regions not in ("auto", "brats", "none"):
        raise ConfigError(f"regions must be auto, brats or none, got {regions!r}")
    store = gt.store if gt.store is not None else pred.store
    mapping: dict[int, int] | None = None
    names = list(classes) if classes else None
    if isinstance(labels_map, str):
        mapping = parse_labels_map(labels_map)
    elif labels_map:
        mapping = {int(k): int(v) for k, v in labels_map.items()}
    elif store is not None:
        mapping = {int(k): int(v) for k, v in store.label_mapping.items()}
    if names is None and store is not None:
        names = list(store.classes)
    if names is not None and len(names) < 2:
        raise ConfigError("--classes needs at least two names: the background and one class")
    if regions == "brats" and names is not None and len(names) < 4:
        raise ConfigError(f"--regions brats needs class ids 1-3, but the classes are {names}")
    return LabelPolicy(mapping, names, regions)


# --------------------------------------------------------------------------------------------
# Seams
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeamSources:
    """Where the probability stores of the seam measures are.

    Attributes:
        folder: ``<case>_probabilities.zarr`` of the partitioned prediction (``partseg predict
            --save-probabilities --probabilities-format zarr``).
        reference: the same from whole-volume inference (``--partition none``), or None.
    """

    folder: Path
    reference: Path | None = None


def probability_path(folder: str | os.PathLike, case_id: str) -> Path:
    """The probability store ``partseg predict`` writes for ``case_id`` in ``folder``.

    Example:
        >>> probability_path("out", "c1").as_posix()
        'out/c1_probabilities.zarr'
    """
    return Path(folder) / f"{case_id}_probabilities.zarr"


def _existing(case_id: str, folder: Path, what: str) -> Path:
    """The probability store of ``case_id`` in ``folder``; InputError naming it when missing."""
    path = probability_path(folder, case_id)
    if not path.exists():
        raise InputError(
            case_id,
            path,
            f"the {what} probability file is missing",
            "write it with partseg predict --save-probabilities --probabilities-format zarr "
            f"--out {folder}",
        )
    return path


def _open_probabilities(case_id: str, folder: Path, what: str) -> tuple[Any, Path]:
    """The read-only (K, Z, Y, X) zarr array of ``case_id`` in ``folder``, and its path."""
    import zarr

    path = _existing(case_id, folder, what)
    try:
        return zarr.open_array(str(path), mode="r"), path
    except Exception as err:  # zarr raises several types for a broken or foreign store
        raise InputError(
            case_id,
            path,
            f"cannot open the {what} probabilities: {err}",
            "predict the case again with partseg predict --probabilities-format zarr",
        ) from err


def check_seam_files(sources: SeamSources, case_ids: Iterable[str]) -> None:
    """Raise InputError naming the first case whose probability file is missing."""
    for case_id in case_ids:
        _existing(case_id, sources.folder, "stitched")
        if sources.reference is not None:
            _existing(case_id, sources.reference, "reference")


def seam_section(case_id: str, sources: SeamSources) -> dict[str, dict[str, float]]:
    """The ``"seam"`` result section of one case: ``{"probabilities": {metric: value}}``.

    Metrics: ``seam_index`` (mean |delta p| across core faces / mean |delta p| between interior
    neighbours; 1.0 = no seam; NaN when the prediction has a single core), and with a
    reference ``max_abs``, ``mean_abs`` and ``changed_label_share`` (argmax differs), all from
    :mod:`partseg.infer.seams`, streamed slab by slab.

    Raises:
        InputError: a probability file is missing or unreadable, has no ``core`` attribute, or
            the stitched and reference arrays differ in shape.
    """
    from partseg.infer.seams import reference_error, seam_index

    stitched, path = _open_probabilities(case_id, sources.folder, "stitched")  # (K, Z, Y, X)
    core = stitched.attrs.get("core")
    if core is None or len(core) != stitched.ndim - 1:
        raise InputError(
            case_id,
            path,
            f"the probabilities have no 'core' attribute of {stitched.ndim - 1} sizes "
            f"(got {core!r})",
            "write them with partseg predict, which records the partition core",
        )
    metrics = {"seam_index": seam_index(stitched, [int(c) for c in core])}
    if sources.reference is not None:
        reference, ref_path = _open_probabilities(case_id, sources.reference, "reference")
        if tuple(reference.shape) != tuple(stitched.shape):
            raise InputError(
                case_id,
                f"{path} vs {ref_path}",
                f"stitched probabilities {tuple(stitched.shape)} and reference "
                f"{tuple(reference.shape)} differ in shape (K, Z, Y, X)",
                "use a reference predicted from the same store and model",
            )
        metrics.update(reference_error(stitched, reference))
    return {SEAM_TARGET: metrics}


# --------------------------------------------------------------------------------------------
# Evaluating
# --------------------------------------------------------------------------------------------


def evaluate_pair(
    case_id: str,
    pred: Side,
    gt: Side,
    policy: LabelPolicy,
    *,
    seams: SeamSources | None = None,
    warn: Warn | None = None,
) -> tuple[dict[str, Any], int]:
    """Metrics of one case (classes named by id) and the number of classes it was run with."""
    pred_raw, pred_spacing = read_labels(pred, case_id)
    gt_raw, spacing = read_labels(gt, case_id)
    if pred_raw.shape != gt_raw.shape:
        raise InputError(
            case_id,
            f"{pred.where(case_id)} vs {gt.where(case_id)}",
            f"prediction shape {pred_raw.shape} differs from ground truth shape {gt_raw.shape} "
            "(axes Z, Y, X)",
            "evaluate predictions exported in the geometry of the ground truth",
        )
    if not np.allclose(pred_spacing, spacing, rtol=1e-3, atol=1e-4):
        (warn or _default_warn)(
            f"case {case_id!r}: prediction spacing {pred_spacing} differs from ground truth "
            f"{spacing}; using the ground truth's"
        )
    pred_ids, gt_ids = policy.to_class_ids(
        case_id,
        [
            (pred_raw, pred.is_nifti, pred.where(case_id)),
            (gt_raw, gt.is_nifti, gt.where(case_id)),
        ],
    )
    n_classes = policy.n_classes()
    top = max(int(pred_ids.max()), int(gt_ids.max()))
    if top >= n_classes:
        raise InputError(
            case_id,
            gt.where(case_id),
            f"class id {top} has no name in the {n_classes} classes {policy.class_names}",
            "pass --classes with a name for every class id",
        )
    regions = policy.regions()
    n_classes = max(n_classes, 4) if regions else n_classes
    result = evaluate_case(
        pred_ids, gt_ids, [str(i) for i in range(n_classes)], spacing, regions=regions
    )
    result = {"pred": pred.where(case_id), "gt": gt.where(case_id), **result}
    if seams is not None:
        result["seam"] = seam_section(case_id, seams)
    return result, n_classes


def finalize_case(
    result: Mapping[str, Any], names: Sequence[str], regions: Mapping[str, Any]
) -> dict[str, Any]:
    """Pad a case to all classes (absent classes are 'both empty'), name them, drop regions."""
    n = len(names)
    by_id = result["classes"]
    if len(by_id) + 1 < n:
        empty = np.zeros((1,) * len(result["shape"]), dtype=bool)
        both_empty = binary_metrics(empty, empty, result["spacing"])
        by_id = {**by_id, **{str(i): dict(both_empty) for i in range(len(by_id) + 1, n)}}
    matrix = np.zeros((n, n), dtype=np.int64)
    old = np.asarray(result["confusion_matrix"], dtype=np.int64)
    matrix[: min(n, old.shape[0]), : min(n, old.shape[1])] = old[:n, :n]
    out = dict(result)
    out["classes"] = {names[int(i)]: metrics for i, metrics in by_id.items() if int(i) < n}
    out["regions"] = {k: v for k, v in result["regions"].items() if k in regions}
    out["confusion_matrix"] = matrix.tolist()
    return out


def evaluate_all(
    pred: Side,
    gt: Side,
    case_ids: Iterable[str],
    policy: LabelPolicy,
    *,
    seams: SeamSources | None = None,
    warn: Warn | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate every case (one case in memory at a time), then name classes and regions."""
    raw = {
        case_id: evaluate_pair(case_id, pred, gt, policy, seams=seams, warn=warn)[0]
        for case_id in case_ids
    }
    names, regions = policy.final_names(), policy.final_regions()
    return {case_id: finalize_case(result, names, regions) for case_id, result in raw.items()}


def _seam_sources(
    seams: str | os.PathLike | None, seam_reference: str | os.PathLike | None
) -> SeamSources | None:
    if seams is None:
        if seam_reference is not None:
            raise ConfigError(
                "--seam-reference needs --seams: the folder of the partitioned prediction's "
                "probabilities to compare with the reference"
            )
        return None
    for folder in (seams, seam_reference):
        if folder is not None and not Path(folder).is_dir():
            raise InputError(
                "-",
                folder,
                "the probability folder does not exist",
                "pass the --out folder of partseg predict --save-probabilities "
                "--probabilities-format zarr",
            )
    return SeamSources(Path(seams), Path(seam_reference) if seam_reference else None)


def evaluate_folders(
    pred: str | os.PathLike,
    gt: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    regions: str = "auto",
    labels_map: Mapping[int, int] | str | None = None,
    allow_missing: bool = False,
    seams: str | os.PathLike | None = None,
    seam_reference: str | os.PathLike | None = None,
    warn: Warn | None = None,
) -> dict[str, Any]:
    """Evaluate predictions against ground truth: per-case metrics and their summary.

    Args:
        pred: predicted labels: a NIfTI file, a folder of them, or a partseg store.
        gt: ground-truth labels, in the same forms.
        classes: class names by class id, background first (default: the store's classes, the
            BraTS names for BraTS labels, else ``background, class_1, ...``).
        regions: ``"auto"`` (BraTS regions for BraTS labels), ``"brats"`` or ``"none"``.
        labels_map: original label value -> class id for NIfTI files, as a mapping or
            ``"0:0,1:1,2:2,4:3"`` (default: a store's mapping, else BraTS 4 -> 3 when detected,
            else identity).
        allow_missing: skip cases found on one side only (with a warning) instead of raising.
        seams: folder of ``<case>_probabilities.zarr`` from ``partseg predict``: adds a
            ``"seam"`` section with ``seam_index`` to each case.
        seam_reference: the same folder from ``--partition none``: adds ``max_abs``,
            ``mean_abs`` and ``changed_label_share`` to the seam section (needs ``seams``).
        warn: receives warning texts (default: :func:`warnings.warn`).

    Returns:
        ``{"pred", "gt", "classes", "regions", "label_mapping", "seams", "seam_reference",
        "skipped", "summary", "cases"}``: ``cases`` maps case id -> the
        :func:`partseg.metrics.evaluate_case` result (plus ``pred``/``gt`` file names and the
        optional ``seam`` section); ``summary`` is :func:`partseg.metrics.summarize` of them.

    Raises:
        InputError: unreadable or mismatched cases, files or shapes (the message names them).
        ConfigError: inconsistent options.

    Example:
        >>> import tempfile, nibabel as nib
        >>> root = Path(tempfile.mkdtemp())
        >>> gt = np.zeros((2, 4, 4), np.uint8); gt[0, 1:3, 1:3] = 1  # (Z, Y, X)
        >>> pred = gt.copy(); pred[0, 1:3, 3] = 1                     # 2 false positives
        >>> nib.save(nib.Nifti1Image(gt.T, np.eye(4)), str(root / "a_seg.nii.gz"))
        >>> nib.save(nib.Nifti1Image(pred.T, np.eye(4)), str(root / "a_pred.nii.gz"))
        >>> report = evaluate_folders(root / "a_pred.nii.gz", root / "a_seg.nii.gz")
        >>> report["classes"], report["cases"]["a"]["classes"]["class_1"]["dice"]
        (['background', 'class_1'], 0.8)
    """
    sources = _seam_sources(seams, seam_reference)
    pred_side, gt_side = open_side(pred, "PRED"), open_side(gt, "GT")
    pred_side = pair_single_files(pred_side, gt_side)
    case_ids, skipped = match_cases(pred_side, gt_side, allow_missing, warn)
    if sources is not None:
        check_seam_files(sources, case_ids)
    policy = make_policy(
        pred_side, gt_side, classes=classes, labels_map=labels_map, regions=regions
    )
    cases = evaluate_all(pred_side, gt_side, case_ids, policy, seams=sources, warn=warn)
    return {
        "pred": os.fspath(pred),
        "gt": os.fspath(gt),
        "classes": policy.final_names(),
        "regions": {k: list(v) for k, v in policy.final_regions().items()},
        "label_mapping": policy.mapping_description(),
        "seams": os.fspath(seams) if seams is not None else None,
        "seam_reference": os.fspath(seam_reference) if seam_reference is not None else None,
        "skipped": skipped,
        "summary": summarize(cases),
        "cases": cases,
    }


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _targets(
    cases: Mapping[str, Mapping[str, Any]], sections: Sequence[str]
) -> list[tuple[str, str]]:
    """(section, target) pairs present in any case, sections in the given order."""
    found = {(s, t): None for s in sections for case in cases.values() for t in case.get(s, {})}
    return list(found)


def _fmt(value: float, metric: str) -> str:
    if not math.isfinite(value):
        return "-"
    if metric == "dice":
        return f"{value:.3f}"
    return f"{value:.2f}" if metric.startswith("hd") else f"{value:.4g}"


def format_table(cases: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    """Dice and HD95 (mm) per case and target, then the mean over cases; seam metrics after.

    Example:
        >>> case = {"classes": {"tumor": {"dice": 0.8, "hd95": 1.0}}}
        >>> summary = {"classes": {"tumor": {"dice": {"mean": 0.8}, "hd95": {"mean": 1.0}}}}
        >>> print(format_table({"a": case}, summary))
        case            tumor
                Dice     HD95
        a      0.800     1.00
        mean   0.800     1.00
    """
    targets = _targets(cases, ("classes", "regions"))
    width = max([len("case"), len("mean"), *(len(c) for c in cases)])
    header = "case".ljust(width) + "".join(f"  {t:>15}" for _, t in targets)
    sub = " " * width + "".join(f"  {'Dice':>6} {'HD95':>8}" for _ in targets)
    lines = [header, sub]
    for case_id, result in cases.items():
        cells = [
            f"  {_fmt(result[s][t]['dice'], 'dice'):>6} {_fmt(result[s][t]['hd95'], 'hd95'):>8}"
            for s, t in targets
        ]
        lines.append(case_id.ljust(width) + "".join(cells))
    means = [
        f"  {_fmt(summary[s][t]['dice']['mean'], 'dice'):>6} "
        f"{_fmt(summary[s][t]['hd95']['mean'], 'hd95'):>8}"
        for s, t in targets
    ]
    lines.append("mean".ljust(width) + "".join(means))
    if "seam" in summary:
        lines += ["", _seam_table(cases, summary, width)]
    return "\n".join(lines)


def _seam_table(
    cases: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any], width: int
) -> str:
    """Every seam metric per case (``-`` for NaN), then the mean over cases."""
    seam = summary["seam"][SEAM_TARGET]
    columns = [(m, max(10, len(m))) for m in seam if isinstance(seam[m], Mapping)]
    lines = ["seam".ljust(width) + "".join(f"  {m:>{w}}" for m, w in columns)]
    for case_id, result in cases.items():
        values = result.get("seam", {}).get(SEAM_TARGET, {})
        cells = [f"  {_fmt(values.get(m, math.nan), m):>{w}}" for m, w in columns]
        lines.append(case_id.ljust(width) + "".join(cells))
    means = [f"  {_fmt(seam[m]['mean'], m):>{w}}" for m, w in columns]
    lines.append("mean".ljust(width) + "".join(means))
    return "\n".join(lines)


def csv_rows(
    cases: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any]
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: one per (case, section, target), then mean/std/median rows.

    The metric columns are every metric of any section (classes, regions, seam); a row leaves
    the metrics its section lacks empty.
    """
    targets = _targets(cases, SECTIONS)
    metrics = list(
        {m: None for s, t in targets for case in cases.values() for m in case.get(s, {}).get(t, {})}
    )
    rows: list[list[Any]] = []
    for case_id, result in cases.items():
        for s, t in targets:
            values = result.get(s, {}).get(t, {})
            rows.append([case_id, s, t, *(values.get(m, "") for m in metrics)])
    for stat in CSV_SUMMARY_STATS:
        for s, t in targets:
            stats = summary[s][t]
            rows.append([stat, s, t, *(stats[m][stat] if m in stats else "" for m in metrics)])
    return ["case", "section", "target", *metrics], rows


def to_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text of a header and rows (``\\n`` line ends).

    Example:
        >>> to_csv(["a", "b"], [[1, 2]])
        'a,b\\n1,2\\n'
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
