"""From original label values to class ids: labels maps, and the policy that picks mapping,
class names and regions for a whole evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from partseg.errors import ConfigError, InputError
from partseg.evaluation.sides import Side
from partseg.metrics import BRATS_CLASSES, BRATS_LABEL_MAPPING, BRATS_REGIONS

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
            "pass --labels-map with every label value",
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
    gt_values: set[int] = field(default_factory=set)
    pred_values: dict[int, tuple[str, str]] = field(default_factory=dict)

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

    def observe(self, case_id: str, pred: np.ndarray, pred_where: str, gt: np.ndarray) -> None:
        """Note the label values of one case for :meth:`check_values` (auto mode only)."""
        if self.mapping is not None:
            return
        self.gt_values.update(label_values(gt))
        for value in label_values(pred):
            self.pred_values.setdefault(value, (case_id, pred_where))

    def check_values(self) -> None:
        """In auto mode, refuse prediction values the ground truth cannot explain.

        The expected set is every value from 0 to the largest ground-truth value (and {0, 1}):
        a prediction may hold a class that some ground truths lack, but a value above them all
        (9 against BraTS {0, 1, 2, 4}) is another labelling or a damaged file, not 10 classes.
        """
        if self.mapping is not None or not self.gt_values:
            return
        expected = set(range(max(self.gt_values) + 1)) | {0, 1}
        extra = sorted(v for v in self.pred_values if v not in expected)
        if extra:
            case_id, where = self.pred_values[extra[0]]
            raise InputError(
                case_id,
                where,
                f"the prediction has label value(s) {extra} outside the label set of the "
                f"ground truth {sorted(expected)} (values in all ground truths: "
                f"{sorted(self.gt_values)})",
                "check that PRED holds label maps of the same task, or pass --labels-map with "
                "every value",
            )

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
