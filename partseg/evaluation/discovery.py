"""Finding the label files of a folder: every layout ingest knows, plus prediction folders.

A ground-truth folder is first read with the dataset layouts of :data:`partseg.store.LAYOUTS`
(the discovery ``partseg ingest`` uses, NIfTI layouts only):

* BraTS 2017-2021 (``<id>_seg.nii.gz``) and BraTS 2023 (``<id>-seg.nii.gz`` next to ``-t1n``
  ``-t1c`` ``-t2w`` ``-t2f``), one folder per case or flat: the ``seg`` files;
* MSD / nnU-Net raw (``dataset.json``, ``imagesTr/``, ``labelsTr/<id>.nii.gz``): ``labelsTr``;
  a ``labelsTr`` / ``labelsTs`` folder given directly reads the ``dataset.json`` next to it.

Otherwise (and for predictions) the NIfTI files directly inside the folder are the cases
(``<id>.nii.gz``, ``<id>_pred.nii.gz``; ``*_probabilities.nii.gz`` and hidden files are left
out), or, when there are none, the ``*_seg`` / ``-seg`` (ground truth) or ``*_pred``
(predictions) files anywhere below. A prediction folder that is a raw dataset with scans (and
no ``*_pred`` files) yields its label files, marked as looking like ground truth, so the caller
can refuse a swapped order (:func:`~partseg.evaluation.sides.check_order`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from partseg.errors import InputError
from partseg.evaluation.conventions import Convention, brats_2023_hint, has_scans, of_source
from partseg.store.nifti_layouts import find_msd
from partseg.store.sources import LAYOUTS, ReadOptions, Source

__all__ = ["Found", "case_id_from_name", "find_files", "is_nifti", "nifti_stem"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
GT_SUFFIXES = ("_seg", "-seg")
PRED_SUFFIXES = ("_pred",)
#: Files whose presence marks a folder of predictions (what wrote it, for messages).
PREDICTION_MARKS = {
    ".partseg-predict.json": "partseg predict wrote it (.partseg-predict.json)",
    "predict_from_raw_data_args.json": "nnU-Net predicted it (predict_from_raw_data_args.json)",
}
_LABEL_FOLDERS = ("labelsTr", "labelsTs")


def is_nifti(path: Path) -> bool:
    """True for ``.nii`` / ``.nii.gz`` names."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(name: str) -> str:
    """``name`` without ``.nii.gz`` / ``.nii``."""
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_id_from_name(name: str) -> str:
    """The case id of a NIfTI file name: without ``.nii[.gz]`` and one ``_seg``/``-seg``/``_pred``.

    Example:
        >>> case_id_from_name("BraTS20_Training_001_seg.nii.gz")
        'BraTS20_Training_001'
        >>> case_id_from_name("BraTS-GLI-00000-000-seg.nii.gz")
        'BraTS-GLI-00000-000'
    """
    stem = nifti_stem(name)
    for suffix in (*GT_SUFFIXES, *PRED_SUFFIXES):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return nifti_stem(path.name).endswith(suffixes)


@dataclass(frozen=True)
class Found:
    """The label files of one folder and what the folder looks like.

    Attributes:
        files: case id -> NIfTI label file.
        what: what was found, for messages (e.g. ``"a BraTS 2023 dataset"``).
        convention: the label convention the layout declares or hints at, if any.
        gt_like: why the folder looks like ground truth (a raw dataset), or None.
        pred_like: why the folder looks like predictions, or None.
    """

    files: dict[str, Path]
    what: str
    convention: Convention | None = None
    gt_like: str | None = None
    pred_like: str | None = None


def _unique(paths: list[Path], label: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
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


def _direct(root: Path) -> list[Path]:
    """NIfTI label candidates directly in ``root`` (no probabilities, no hidden files)."""
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file()
        and is_nifti(p)
        and not p.name.startswith(".")
        and not nifti_stem(p.name).endswith("_probabilities")
    )


def _below(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and is_nifti(p) and not p.name.startswith(".") and _has_suffix(p, suffixes)
    )


def _layout(root: Path) -> Source | None:
    """The first NIfTI dataset layout of :data:`LAYOUTS` found in ``root`` with label files or
    scans (a folder of ``<id>/<id>_pred.nii.gz`` files alone is not a dataset)."""
    for name in LAYOUTS:
        try:
            source = LAYOUTS.get(name).find(root, ReadOptions(), "train")
        except InputError:  # e.g. a dataset.json partseg cannot read: not a layout here
            continue
        if source is None or not source.cases or any(c.fmt != "nifti" for c in source.cases):
            continue
        if any(c.label_file is not None for c in source.cases) or has_scans(source):
            return source
    return None


def _describe(source: Source) -> str:
    if source.layout == "msd":
        return f"an MSD / nnU-Net raw dataset ({source.root / 'dataset.json'})"
    channels = "/".join(source.channels)
    return f"a {source.layout} dataset with {channels} scans"


def _labels_folder(root: Path) -> Found | None:
    """``labelsTr`` / ``labelsTs`` of a raw dataset: its files and the parent's dataset.json."""
    if root.name not in _LABEL_FOLDERS or not (root.parent / "dataset.json").is_file():
        return None
    try:
        source = find_msd(root.parent, "train")
    except InputError:  # labels partseg cannot read (region-based): values decide, as for flat
        source = None
    convention = of_source(source) if source is not None else None
    files = _unique(_direct(root), "label")
    what = f"the {root.name} folder of an MSD / nnU-Net raw dataset"
    return Found(files, what, convention, gt_like=what)


def _from_layout(root: Path, source: Source, label: str, pred_like: str | None) -> Found | None:
    """The label files of a discovered dataset (``*_pred`` files for PRED when it has some)."""
    what = _describe(source)
    if label == "PRED":
        predictions = _below(root, PRED_SUFFIXES)
        if predictions:
            return Found(_unique(predictions, label), f"the *_pred files in {what}", None, None,
                         pred_like)  # fmt: skip
    labelled = {c.case_id: c.label_file for c in source.cases if c.label_file is not None}
    scans = has_scans(source)
    if labelled:
        gt_like = what if scans else None
        return Found(labelled, what, of_source(source), gt_like, pred_like)
    if scans:
        raise InputError(
            "-",
            root,
            f"{label} folder is {what} without label files (a validation or test set?)",
            "point to the folder with the label files",
        )
    return None


def find_files(root: Path, label: str) -> Found:
    """The label files of ``root`` for side ``label`` (``"PRED"`` or ``"GT"``).

    Raises:
        InputError: no label file found (the message says what was looked for), two files
            with one case id, or a raw dataset without labels given as ground truth.
    """
    marks = [text for name, text in PREDICTION_MARKS.items() if (root / name).is_file()]
    pred_like = "; ".join(marks) or None
    labels_folder = _labels_folder(root)
    if labels_folder is not None:
        return labels_folder
    source = _layout(root)
    if source is not None:
        found = _from_layout(root, source, label, pred_like)
        if found is not None:
            return found
    files = _direct(root)
    if not files and label == "GT":
        files = _below(root, GT_SUFFIXES)
    if not files:
        files = _below(root, PRED_SUFFIXES)
    if not files:
        looked = "*_pred" if label == "PRED" else "*_seg / -seg"
        raise InputError(
            "-",
            root,
            f"{label} folder holds no NIfTI files (.nii/.nii.gz) and no {looked} files below it",
            "point to the folder with the label files",
        )
    named_pred = [p.name for p in files if _has_suffix(p, PRED_SUFFIXES)]
    if named_pred and not pred_like:
        pred_like = f"its files are named like predictions ({named_pred[0]})"
    hints = {brats_2023_hint(p) is not None for p in files}
    convention = brats_2023_hint(files[0]) if hints == {True} else None
    return Found(_unique(files, label), "a folder of NIfTI files", convention, None, pred_like)
