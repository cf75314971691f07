"""Find the cases of a raw dataset on disk, per layout, and the dataclasses that describe them.

Each layout is one small function returning a :class:`Source`: the dataset-level declaration
(channel names, declared label values and their names) plus a list of :class:`SourceCase`. The
NIfTI folder layouts live in :mod:`~partseg.store.nifti_layouts`, HDF5 and NumPy in
:mod:`~partseg.store.array_layouts`; this module holds the dataclasses, :func:`discover` and
the :data:`LAYOUTS` registry.
Discovery only looks at file names (and at most one header); files are read, one case at a time,
by :func:`~partseg.store.reading.read_case`, which also checks them and raises
:class:`~partseg.errors.InputError` naming the case, the file, the problem and what to do.

Supported layouts (the entries of :data:`LAYOUTS`, in the order ``auto`` tries them; a new
layout is one ``find_*`` function with its :class:`Layout` plus one ``LAYOUTS.add`` line):

* ``msd``: Medical Segmentation Decathlon and nnU-Net raw folders: ``dataset.json`` (channel names
  under ``modality`` or ``channel_names``, labels under ``labels``, nnU-Net's region-based form
  with ``regions_class_order`` too: :mod:`partseg.store.regions`), ``imagesTr/``, ``labelsTr/``,
  ``imagesTs/``; one 4D NIfTI per case (MSD) or one file per channel with ``_0000`` suffixes
  (nnU-Net).
* ``brats``: BraTS 2017-2021 (``<id>_t1.nii.gz _t1ce _t2 _flair _seg``; labels {0, 1, 2, 4}) and
  BraTS 2023 (``<id>-t1n.nii.gz -t1c -t2w -t2f -seg``; labels {0, 1, 2, 3}), one folder per case
  or all files in one flat folder; a case without ``seg`` has no label (validation/test sets).
  The same folder layout with any other channel names, ``<id>/<id>_<channel>.nii.gz`` plus an
  optional ``<id>/<id>_seg.nii.gz`` (e.g. the ``_tof`` files of ``partseg phantom --kind
  aneurysm``), is read too, one folder per case only: the channels are the union of the names
  found, in **sorted order** (``adc, t2``), and the labels are declared from the data as for
  HDF5/NumPy. A case lacking a channel that other cases have is reported as bad (missing file).
* ``nnunet-images``: a flat folder of ``<id>_<XXXX>.nii[.gz]`` channel files without
  ``dataset.json`` (nnU-Net's ``imagesTs``, what ``nnUNetv2_predict -i`` reads); the channels
  are ``ch0, ch1, ...`` by index (``partseg predict --input`` names them after the model's).
* ``hdf5``: one ``.h5``/``.hdf5`` file per case with an image dataset (C, Z, Y, X) or (Z, Y, X)
  and an optional label dataset (Z, Y, X); optional dataset attributes ``spacing`` (Z, Y, X),
  ``affine`` (4 x 4, NIfTI convention) and ``channels``.
* ``numpy``: ``<id>.npy`` images (C, Z, Y, X) or (Z, Y, X) with optional ``<id>_label.npy`` or
  ``<id>_seg.npy``, and ``<id>.npz`` archives with ``image``/``label`` keys. Spacing 1 mm.

Declared labels: BraTS and MSD declare their label set (the file naming or ``dataset.json``);
HDF5, NumPy and BraTS-style folders with other channel names declare none, and ingest then takes
the values found in the first labelled case (or ``--labels``); a later case with another value
is reported as bad.

Axis order: NIfTI arrays are (X, Y, Z[, C]); :func:`~partseg.store.reading.read_case` returns a
:class:`RawCase` with images (C, Z, Y, X) and labels (Z, Y, X). The affine is kept as stored, in
the NIfTI convention (it maps voxel indices (i, j, k) = (x, y, z) to world coordinates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from partseg.errors import InputError
from partseg.registry import Registry
from partseg.store.regions import Regions


@dataclass(frozen=True)
class SourceCase:
    """One case as found on disk (nothing read yet).

    Attributes:
        case_id: identifier, e.g. ``"BraTS20_Training_001"``.
        image_files: one file per channel (NIfTI per modality), or one file holding every
            channel (4D NIfTI, HDF5, ``.npy``, ``.npz``). A missing modality keeps its expected
            path, so reading reports it.
        label_file: the label file; ``None`` when the case has no label; for HDF5/``.npz`` the
            same file as the image when it holds a label dataset.
        channel_names: names of the image channels, in order.
        fmt: how to read it: ``"nifti"`` (NIfTI/NRRD/MHA), ``"hdf5"``, ``"npy"`` or ``"npz"``.
    """

    case_id: str
    image_files: tuple[Path, ...]
    label_file: Path | None
    channel_names: tuple[str, ...]
    fmt: str = "nifti"


@dataclass(frozen=True)
class Source:
    """A discovered dataset: its layout, cases and declarations.

    Attributes:
        layout: one of :data:`LAYOUTS`.
        root: the folder (or file) it was found in.
        cases: cases in a stable (sorted) order.
        channels: channel names shared by every case.
        labels: declared label values -> class names, or ``None`` when the layout declares none.
        regions: region-based labels in label values (nnU-Net's BraTS ``dataset.json``), or
            ``None``; see :mod:`partseg.store.regions`.
        channels_named: False when the files do not name their channels (``ch0, ch1, ...`` by
            index: ``nnunet-images`` folders, HDF5 without names, NumPy).
    """

    layout: str
    root: Path
    cases: tuple[SourceCase, ...]
    channels: tuple[str, ...]
    labels: dict[int, str] | None = None
    regions: Regions | None = None
    channels_named: bool = True


@dataclass(frozen=True)
class ReadOptions:
    """Dataset names for HDF5 files and ``.npz`` keys."""

    image_key: str = "image"
    label_key: str = "label"


@dataclass
class RawCase:
    """One case read into partseg's axis order, before any preprocessing.

    Attributes:
        image: (C, Z, Y, X) float32.
        label: (Z, Y, X) integer array, or ``None``.
        affine: (4, 4) float64 in the NIfTI convention (voxel (x, y, z) -> world).
        spacing: voxel size (Z, Y, X) in mm.
    """

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------- discovery


def discover(
    root: str | Path, layout: str = "auto", options: ReadOptions | None = None, split: str = "train"
) -> Source:
    """Find the cases under ``root`` for ``layout`` (``"auto"`` tries each layout in turn).

    Args:
        root: the dataset folder (or, for HDF5/NumPy, a single file).
        layout: ``"auto"`` or one of :data:`LAYOUTS`.
        options: HDF5 dataset names / ``.npz`` keys.
        split: MSD/nnU-Net only: ``"train"`` (imagesTr), ``"test"`` (imagesTs) or ``"all"``.

    Raises:
        InputError: the folder does not exist, or no case of the layout was found (the message
            lists what was looked for).

    Example:
        >>> import tempfile
        >>> discover(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        partseg.errors.InputError: case '(dataset)': no known dataset layout (looked for msd: ...
    """
    root = Path(root)
    options = options or ReadOptions()
    if not root.exists():
        raise InputError("(dataset)", root, "source path does not exist", "check the SRC path")
    if layout != "auto":
        if layout not in LAYOUTS:
            raise InputError(
                "(dataset)",
                root,
                f"unknown layout {layout!r}",
                f"use one of auto, {', '.join(LAYOUTS.names())}",
            )
        found = LAYOUTS.get(layout).find(root, options, split)
        if found is None or not found.cases:
            raise InputError(
                "(dataset)",
                root,
                f"no {layout} cases found",
                f"expected {LAYOUTS.get(layout).looked_for}",
            )
        return _unique_ids(found)
    for name in LAYOUTS:
        found = LAYOUTS.get(name).find(root, options, split)
        if found is not None and found.cases:
            return _unique_ids(found)
    looked = "; ".join(f"{name}: {LAYOUTS.get(name).looked_for}" for name in LAYOUTS)
    raise InputError(
        "(dataset)",
        root,
        f"no known dataset layout (looked for {looked})",
        "point SRC at the dataset folder or pass --layout",
    )


def _unique_ids(source: Source) -> Source:
    """``source`` when no two of its cases share an id; else an InputError naming both."""
    seen: dict[str, SourceCase] = {}
    for case in source.cases:
        other = seen.setdefault(case.case_id, case)
        if other is not case:
            duplicate(case.case_id, other.image_files[0], case.image_files[0])
    return source


def duplicate(case_id: str, first: Path, second: Path, what: str = "case") -> None:
    raise InputError(
        case_id,
        second,
        f"another file gives the same {what}: {first}; partseg will not guess which one is meant",
        "remove or rename one of them",
    )


def is_metadata(path: Path) -> bool:
    """macOS AppleDouble files (``._<name>``) hold Finder metadata, never images."""
    return path.name.startswith("._")


def unnamed_channels(count: int) -> tuple[str, ...]:
    """The names of channels the files do not name: ``ch0, ch1, ...`` by index.

    Example:
        >>> unnamed_channels(2)
        ('ch0', 'ch1')
    """
    return tuple(f"ch{i}" for i in range(count))


# ----------------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Layout:
    """One dataset layout: how to find its cases and what it looks for (for error messages).

    Attributes:
        find: ``find(root, options, split)`` -> the :class:`Source`, or ``None`` when the folder
            does not hold this layout.
        looked_for: the files the layout expects, named when none are found.
    """

    find: Callable[[Path, ReadOptions, str], Source | None]
    looked_for: str


#: The dataset layouts ``partseg ingest --layout`` accepts, in the order ``auto`` tries them
#: (each implemented in :mod:`~partseg.store.nifti_layouts` or
#: :mod:`~partseg.store.array_layouts`, imported on first use).
LAYOUTS: Registry[Layout] = Registry("layout")
LAYOUTS.add(
    "msd",
    "partseg.store.nifti_layouts:MSD",
    help="Medical Segmentation Decathlon / nnU-Net raw folder (dataset.json, imagesTr/)",
)
LAYOUTS.add(
    "brats",
    "partseg.store.nifti_layouts:BRATS",
    help="BraTS 2017-2023 NIfTI files, or <id>/<id>_<channel>.nii.gz folders",
)
LAYOUTS.add(
    "nnunet-images",
    "partseg.store.nifti_layouts:NNUNET_IMAGES",
    help="flat folder of <id>_<XXXX>.nii.gz channel files (nnU-Net imagesTs), channels by index",
)
LAYOUTS.add(
    "hdf5",
    "partseg.store.array_layouts:HDF5",
    help="one .h5/.hdf5 file per case (image and optional label datasets)",
)
LAYOUTS.add(
    "numpy",
    "partseg.store.array_layouts:NUMPY",
    help="<id>.npy (+ <id>_label.npy) or <id>.npz files",
)
