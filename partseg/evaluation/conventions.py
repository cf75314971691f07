"""What the label values of a side mean: the convention of its layout, dataset.json or store.

BraTS changed its labels between editions: 2017-2021 files hold {0, 1, 2, 4} (enhancing tumour
= 4), BraTS 2023 files and nnU-Net's converted BraTS hold {0, 1, 2, 3} (enhancing tumour = 3).
Scoring one against the other silently scores enhancing tumour 0, so partseg reads the
convention of the ground truth from where it came from (:class:`Convention`) and refuses a
prediction whose values do not fit it (:func:`mismatch_error`), naming both label sets, the
files and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from partseg.errors import InputError
from partseg.store.editions import BRATS23_CHANNELS, BRATS_CHANNELS
from partseg.store.preprocess import label_mapping
from partseg.store.sources import Source

__all__ = [
    "Convention",
    "brats_2023_hint",
    "has_scans",
    "mismatch_error",
    "of_source",
    "of_store",
]


@dataclass(frozen=True)
class Convention:
    """The label values of one side, their class names, and where they were read.

    Attributes:
        labels: label value -> class name, background (0) first.
        source: where the convention comes from, for messages and the report.
        declared: True when a layout with its scans, a ``dataset.json`` or a store declares
            it; False for a hint from file names alone (label files without their scans), which
            the values must confirm (see :class:`~partseg.evaluation.labels.LabelPolicy`).

    Example:
        >>> c = Convention({0: "background", 1: "necrotic", 2: "edema", 4: "enhancing"}, "x")
        >>> c.mapping, c.names[-1]
        ({0: 0, 1: 1, 2: 2, 4: 3}, 'enhancing')
    """

    labels: Mapping[int, str]
    source: str
    declared: bool = True
    ids: Mapping[int, int] | None = None

    @property
    def mapping(self) -> dict[int, int]:
        """Label value -> contiguous class id (``ids``, else the values sorted, as ingest)."""
        return dict(self.ids) if self.ids is not None else label_mapping(self.labels)

    @property
    def names(self) -> list[str]:
        """Class names by class id."""
        by_id = {c: v for v, c in self.mapping.items()}
        return [self.labels.get(by_id[c], f"label_{by_id[c]}") for c in sorted(by_id)]


def has_scans(source: Source) -> bool:
    """True when some case's scan files exist (a raw dataset, not only its label files).

    A folder of ``<id>/<id>_pred.nii.gz`` files reads as a dataset with the channel ``pred``:
    those are predictions, not scans.
    """
    if set(source.channels) <= {"pred", "probabilities"}:
        return False
    return any(path.is_file() for case in source.cases for path in case.image_files)


def of_source(source: Source) -> Convention | None:
    """The convention a discovered raw dataset declares (None when it declares none).

    BraTS editions are declared when their scans are there; label files alone (``_seg`` /
    ``-seg``) give a hint only, since other datasets use the same suffixes.
    """
    if source.labels is None:
        return None
    labels = dict(source.labels)
    if source.layout == "msd":
        return Convention(labels, f"the labels of {Path(source.root) / 'dataset.json'}")
    edition = {
        BRATS_CHANNELS: ("BraTS 2017-2021", "<id>_seg.nii.gz", 4),
        BRATS23_CHANNELS: ("BraTS 2023", "<id>-seg.nii.gz", 3),
    }.get(tuple(source.channels))
    scans = has_scans(source)
    if edition is None:
        return Convention(labels, f"the BraTS layout of {source.root}", declared=scans)
    name, files, et = edition
    where = "next to the scans" if scans else "without scans next to them"
    text = f"the {name} layout of {source.root} ({files} {where}; enhancing tumour = {et})"
    return Convention(labels, text, declared=scans)


def brats_2023_hint(path: Path) -> Convention | None:
    """A hint for one ``<id>-seg.nii.gz`` file: BraTS 2023 labels, to be confirmed by values."""
    if not path.name.lower().endswith(("-seg.nii.gz", "-seg.nii")):
        return None
    names = ("background", "necrotic", "edema", "enhancing")
    labels = dict(enumerate(names))
    source = f"the BraTS 2023 file name of {path} (<id>-seg.nii.gz; enhancing tumour = 3)"
    return Convention(labels, source, declared=False)


def of_store(store: Any) -> Convention:
    """The convention of a partseg store: its label mapping and class names."""
    names, ids = list(store.classes), {int(v): int(c) for v, c in store.label_mapping.items()}
    labels = {v: names[c] if c < len(names) else f"label_{v}" for v, c in ids.items()}
    return Convention(labels, f"the label mapping of the store {store.url}", ids=ids)


def _text(values: Iterable[int]) -> str:
    return "{" + ", ".join(str(v) for v in sorted(values)) + "}"


#: Enhancing tumour's value -> the BraTS labels using it, and the --pred-label-map that maps
#: a prediction using it onto the other value. nnU-Net's converted BraTS (Dataset137) also has
#: enhancing tumour = 3 but swaps 1 and 2 (1 = edema, 2 = necrotic); values cannot tell, so
#: the hint names both maps.
_ET_VALUES = {
    4: ("BraTS 2017-2021", "0=0 1=1 2=2 4=3 (for nnU-Net's converted BraTS ground truth, where "
        "1 and 2 are swapped: 0=0 1=2 2=1 4=3)"),
    3: ("BraTS 2023, nnU-Net", "0=0 1=1 2=2 3=3 (BraTS 2023 labels; nnU-Net's converted BraTS "
        "swaps 1 and 2: 0=0 1=2 2=1 3=3)"),
}  # fmt: skip


def _brats_note(pred: set[int], gt: set[int]) -> tuple[str, str]:
    """(explanation, suggested --pred-label-map) for the BraTS enhancing-tumour mix-up."""
    for mine, theirs in ((4, 3), (3, 4)):
        if mine in pred and theirs in gt and mine not in gt and pred <= {0, 1, 2, mine}:
            note = (
                f"; enhancing tumour is {mine} in the prediction ({_ET_VALUES[mine][0]}) and "
                f"{theirs} in the ground truth ({_ET_VALUES[theirs][0]})"
            )
            return note, _ET_VALUES[mine][1]
    return "", ""


def mismatch_error(
    case_id: str,
    pred_where: str,
    gt_where: str,
    pred_values: Iterable[int],
    gt_values: Iterable[int],
    gt_source: str,
) -> InputError:
    """The error for a prediction whose label values do not fit the ground truth's label set.

    Example:
        >>> err = mismatch_error("c1", "p/c1.nii.gz", "g/c1-seg.nii.gz", [0, 2, 4], [0, 1, 2, 3],
        ...                      "the BraTS 2023 layout of g")
        >>> "--pred-label-map 0=0 1=1 2=2 4=3" in err.hint
        True
    """
    pred, gt = {int(v) for v in pred_values}, {int(v) for v in gt_values}
    note, suggestion = _brats_note(pred, gt)
    where = f"; ground truth {gt_where}" if gt_where else ""
    problem = (
        f"the prediction's label values {_text(pred)} do not fit the ground truth's label set "
        f"{_text(gt)} ({gt_source}{where}): {_text(pred - gt)} outside it{note}"
    )
    fix = f"--pred-label-map {suggestion}" if suggestion else "--pred-label-map VALUE=CLASS ..."
    hint = (
        f"map the prediction's values to the ground truth's classes with {fix}, or re-export "
        "the predictions in the ground truth's labels"
    )
    return InputError(case_id, pred_where, problem, hint)
