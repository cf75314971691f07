"""From original label values to class ids: labels maps, and the policy that picks mapping,
class names and regions for a whole evaluation from the sides' conventions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from partseg.errors import ConfigError, InputError
from partseg.evaluation.conventions import mismatch_error
from partseg.evaluation.sides import Side
from partseg.metrics import BRATS_CLASSES, BRATS_LABEL_MAPPING, BRATS_REGIONS
from partseg.store.preprocess import label_mapping

__all__ = ["LabelPolicy", "apply_mapping", "make_policy", "parse_labels_map"]


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
            "pass --label-map with every label value",
        )
    lut = np.zeros(int(values.max()) + 1 if values.size else 1, dtype=np.int64)
    for key, value in mapping.items():
        if 0 <= key < lut.size:
            lut[key] = value
    return lut[labels]


def label_values(labels: np.ndarray) -> list[int]:
    """The distinct values of an integer label array (a histogram when they are small).

    Example:
        >>> label_values(np.array([[0, 4], [4, 2]], np.uint8))
        [0, 2, 4]
    """
    flat = labels.ravel()
    if flat.size and np.issubdtype(flat.dtype, np.integer):
        low, high = int(flat.min()), int(flat.max())
        if low >= 0 and high < 2**16:  # a bincount is ~20x faster than np.unique's sort
            return np.flatnonzero(np.bincount(flat, minlength=1)).tolist()
    return [int(v) for v in np.unique(flat)]


#: One side of a case for :meth:`LabelPolicy.to_class_ids`: labels, is NIfTI, file.
Labelled = tuple[np.ndarray, bool, str]
_BRATS_2021 = dict(zip(BRATS_LABEL_MAPPING, BRATS_CLASSES, strict=True))


@dataclass
class LabelPolicy:
    """Turns the labels of each case into class ids and decides classes and regions.

    The ground truth's label values mean what its convention says (``mapping``: a labels map,
    the layout's or ``dataset.json``'s declaration, or a store's mapping); a prediction must use
    the same values (or ``pred_mapping``), else :func:`~partseg.evaluation.conventions.\
mismatch_error` names both label sets. Mutable on purpose: without a convention (``mapping``
    None, "auto") it learns from the cases it sees (BraTS while every case fits the BraTS
    labels, those of ``hint`` or {0, 1, 2, 4}, confirmed once enhancing tumour shows; identity
    otherwise; the number of classes grows), so the final names and regions are known after the
    last case.

    Attributes:
        mapping: ground-truth label value -> class id, or None (auto).
        class_names: class names by id, or None (decided at the end).
        regions_choice: ``"auto"``, ``"brats"`` or ``"none"``.
        pred_mapping: prediction label value -> class id when it differs from the ground
            truth's (``--pred-label-map``), else None.
        convention: where ``mapping`` comes from, for messages and the report.
        hint: auto mode: the BraTS labels the file names suggest (2023: {0, 1, 2, 3}).
    """

    mapping: dict[int, int] | None
    class_names: list[str] | None
    regions_choice: str
    pred_mapping: dict[int, int] | None = None
    convention: str = ""
    hint: dict[int, str] | None = None
    brats_possible: bool = True
    seen_et: bool = False
    max_id: int = 1
    gt_values: set[int] = field(default_factory=set)
    pred_values: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def brats_labels(self) -> dict[int, str]:
        """Auto mode: the BraTS label values expected (the hint's, else 2017-2021's)."""
        return dict(self.hint) if self.hint else dict(_BRATS_2021)

    @property
    def is_brats(self) -> bool:
        """True when the classes are BraTS's (declared, or seen so in auto mode)."""
        if self.class_names is not None and tuple(self.class_names) == BRATS_CLASSES:
            return True
        if self.mapping is not None:
            return dict(self.mapping) == dict(BRATS_LABEL_MAPPING)
        return self.brats_possible and self.seen_et

    def _gt_source(self) -> str:
        return self.convention or "the values of the ground truth files"

    def _to_ids(
        self, case_id: str, side: Labelled, mapping: Mapping[int, int], pred_of: Labelled | None
    ) -> np.ndarray:
        """Map one side (``pred_of`` = the ground truth when ``side`` is the prediction)."""
        labels, is_nifti, where = side
        if is_nifti:
            values = label_values(labels)
            unknown = [v for v in values if v not in mapping]
            if unknown and pred_of is not None and self.pred_mapping is None:
                raise mismatch_error(case_id, where, pred_of[2], values, mapping, self._gt_source())
            if unknown:
                which = "--pred-label-map" if pred_of is not None else self._gt_source()
                raise InputError(
                    case_id,
                    where,
                    f"label values {unknown} are not in the label mapping {dict(mapping)} "
                    f"({which})",
                    "pass --label-map (--pred-label-map for the prediction) with every label value",
                )
            labels = apply_mapping(labels, mapping, case_id, where)
        if labels.size and labels.min() < 0:
            raise InputError(case_id, where, "negative label values")
        self.max_id = max(self.max_id, int(labels.max()) if labels.size else 0)
        return labels

    def to_class_ids(
        self, case_id: str, pred: Labelled, gt: Labelled
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class ids of one case's prediction and ground truth, each ``(labels, is_nifti,
        where)``; a prediction outside the ground truth's label set is refused."""
        gt_map = self.mapping
        pred_map = self.pred_mapping if self.pred_mapping is not None else self.mapping
        if gt_map is None or pred_map is None:
            auto = [s for s, m in ((pred, pred_map), (gt, gt_map)) if m is None]
            learned = self._auto_mapping(case_id, auto)
            gt_map = learned if gt_map is None else gt_map
            pred_map = learned if pred_map is None else pred_map
        gt_ids = self._to_ids(case_id, gt, gt_map, None)
        return self._to_ids(case_id, pred, pred_map, gt), gt_ids

    def observe(self, case_id: str, pred: np.ndarray, pred_where: str, gt: np.ndarray) -> None:
        """Note the label values of one case (auto mode only) and refuse a BraTS mix-up as
        soon as it shows: enhancing tumour 3 against a ground truth with 4, or 4 against 3."""
        if self.mapping is not None or self.pred_mapping is not None:
            return
        self.gt_values.update(label_values(gt))
        for value in label_values(pred):
            self.pred_values.setdefault(value, (case_id, pred_where))
        gt_values, pred_values = self.gt_values, set(self.pred_values)
        mixed = (4 in gt_values and gt_values <= {0, 1, 2, 4} and 3 in pred_values) or (
            3 in gt_values and gt_values <= {0, 1, 2, 3} and 4 in pred_values
        )
        if mixed:
            first, where = self.pred_values[3 if 4 in gt_values else 4]
            raise mismatch_error(first, where, "", pred_values, gt_values, self._gt_source())

    def check_values(self) -> None:
        """In auto mode, refuse prediction values the ground truth cannot explain.

        The expected set is every value from 0 to the largest ground-truth value (and {0, 1}):
        a prediction may hold a class that some ground truths lack, but a value above them all
        (9 against BraTS {0, 1, 2, 4}) is another labelling or a damaged file, not 10 classes.
        """
        if self.mapping is not None or self.pred_mapping is not None or not self.gt_values:
            return
        expected = set(range(max(self.gt_values) + 1)) | {0, 1}
        extra = sorted(v for v in self.pred_values if v not in expected)
        if extra:
            case_id, where = self.pred_values[extra[0]]
            raise mismatch_error(
                case_id,
                where,
                "",
                set(self.pred_values),
                self.gt_values,
                "the values of all ground truth files",
            )

    def _auto_mapping(self, case_id: str, arrays: Sequence[Labelled]) -> dict[int, int]:
        """The mapping of the NIfTI ``arrays`` (prediction first) without a convention."""
        values = set().union(*(label_values(a) for a, nifti, _ in arrays if nifti))
        brats = self.brats_labels
        if self.brats_possible and values <= set(brats):
            self.seen_et |= max(brats) in values
            return label_mapping(brats)
        if self.seen_et:
            gt, pred = arrays[-1], arrays[0]
            if len(arrays) == 2 and set(label_values(gt[0])) <= set(brats):
                raise mismatch_error(
                    case_id, pred[2], gt[2], label_values(pred[0]), brats, self._gt_source()
                )
            raise InputError(
                case_id,
                gt[2],
                f"label values {sorted(values)} do not fit the BraTS labels {sorted(brats)} "
                "that earlier cases had",
                "pass --label-map, e.g. 0=0 1=1 2=2 4=3",
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
        brats_2021 = self.is_brats and label_mapping(self.brats_labels) != {
            v: v for v in self.brats_labels
        }
        return "brats" if brats_2021 else "identity"

    def convention_description(self) -> str:
        """Where the ground truth's label values got their meaning, for the report."""
        if self.convention:
            return self.convention
        if self.is_brats:
            edition = "2023" if 3 in self.brats_labels else "2017-2021"
            return f"the values of the ground truth files: BraTS {edition} labels"
        return "the values of the ground truth files (no layout declares them)"


def _mapping_option(labels_map: Mapping[int, int] | str | None) -> dict[int, int] | None:
    if isinstance(labels_map, str):
        return parse_labels_map(labels_map)
    if labels_map:
        return {int(k): int(v) for k, v in labels_map.items()}
    return None


def make_policy(
    pred: Side,
    gt: Side,
    *,
    classes: Sequence[str] | None = None,
    labels_map: Mapping[int, int] | str | None = None,
    pred_labels_map: Mapping[int, int] | str | None = None,
    regions: str = "auto",
) -> LabelPolicy:
    """The label policy from the options and the sides' conventions.

    Ground truth, in order: ``labels_map``; the convention its layout, ``dataset.json`` or store
    declares; a prediction store's mapping; else auto (with a hint from BraTS 2023 file names).
    Predictions use ``pred_labels_map``, else the ground truth's mapping.
    """
    if regions not in ("auto", "brats", "none"):
        raise ConfigError(f"regions must be auto, brats or none, got {regions!r}")
    names = list(classes) if classes else None
    mapping, source = _mapping_option(labels_map), "--labels-map"
    declared = [side.convention for side in (gt, pred) if side.convention is not None]
    declared = [c for c in declared if c.declared]
    _check_store_classes(pred, gt)
    convention = declared[0] if declared else None
    if mapping is None and convention is not None:
        mapping, source = convention.mapping, convention.source
    if names is None and convention is not None and (mapping == convention.mapping):
        names = convention.names
    if names is not None and len(names) < 2:
        raise ConfigError("--classes needs at least two names: the background and one class")
    if regions == "brats" and names is not None and len(names) < 4:
        raise ConfigError(f"--regions brats needs class ids 1-3, but the classes are {names}")
    hint = gt.convention.labels if gt.convention is not None else None
    return LabelPolicy(
        mapping,
        names,
        regions,
        pred_mapping=_mapping_option(pred_labels_map),
        convention=source if mapping is not None else "",
        hint=dict(hint) if hint and mapping is None else None,
    )


def _check_store_classes(pred: Side, gt: Side) -> None:
    """Two stores, or a store and a declared convention, must name the same classes."""
    if pred.store is None or gt.convention is None or not gt.convention.declared:
        return
    pred_names, gt_names = list(pred.store.classes), gt.convention.names
    if pred_names != gt_names:
        raise InputError(
            "-",
            f"{pred.root} vs {gt.root}",
            f"the prediction store's classes {pred_names} differ from the ground truth's "
            f"{gt_names} ({gt.convention.source})",
            "evaluate predictions of a model trained on the ground truth's label set",
        )
