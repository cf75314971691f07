"""Find the cases of a raw dataset on disk, per layout, and the dataclasses that describe them.

Each layout is one small function returning a :class:`Source`: the dataset-level declaration
(channel names, declared label values and their names) plus a list of :class:`SourceCase`.
Discovery only looks at file names (and at most one header); files are read, one case at a time,
by :func:`~partseg.store.reading.read_case`, which also checks them and raises
:class:`~partseg.errors.InputError` naming the case, the file, the problem and what to do.

Supported layouts (the entries of :data:`LAYOUTS`, in the order ``auto`` tries them; a new
layout is one ``find_*`` function plus one ``LAYOUTS.add`` line):

* ``msd``: Medical Segmentation Decathlon and nnU-Net raw folders: ``dataset.json`` (channel names
  under ``modality`` or ``channel_names``, labels under ``labels``), ``imagesTr/``, ``labelsTr/``,
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

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from partseg.errors import InputError
from partseg.registry import Registry

#: BraTS 2017-2021 file suffixes, in channel order.
BRATS_CHANNELS = ("t1", "t1ce", "t2", "flair")
#: BraTS 2023 file suffixes, in the same channel order as :data:`BRATS_CHANNELS`.
BRATS23_CHANNELS = ("t1n", "t1c", "t2w", "t2f")
#: Tumour sub-region names shared by every BraTS edition.
BRATS_CLASS_NAMES = ("background", "necrotic", "edema", "enhancing")

_NIFTI = r"\.nii(?:\.gz)?"
_BRATS_RE = re.compile(rf"^(?P<id>.+)_(?P<mod>t1|t1ce|t2|flair|seg){_NIFTI}$")
_BRATS23_RE = re.compile(rf"^(?P<id>.+)-(?P<mod>t1n|t1c|t2w|t2f|seg){_NIFTI}$")
#: (file pattern, separator, channels in order, declared labels) of each BraTS edition.
_BRATS_EDITIONS = (
    (_BRATS_RE, "_", BRATS_CHANNELS, dict(zip((0, 1, 2, 4), BRATS_CLASS_NAMES, strict=True))),
    (_BRATS23_RE, "-", BRATS23_CHANNELS, dict(enumerate(BRATS_CLASS_NAMES))),
)
_FOLDER_RE = re.compile(rf"^(?P<id>.+)_(?P<mod>[A-Za-z0-9]+){_NIFTI}$")
_CHANNEL_RE = re.compile(r"^(?P<id>.+)_(?P<ch>\d{4})$")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


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
    """

    layout: str
    root: Path
    cases: tuple[SourceCase, ...]
    channels: tuple[str, ...]
    labels: dict[int, str] | None = None


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
            _duplicate(case.case_id, other.image_files[0], case.image_files[0])
    return source


def _duplicate(case_id: str, first: Path, second: Path, what: str = "case") -> None:
    raise InputError(
        case_id,
        second,
        f"another file gives the same {what}: {first}; partseg will not guess which one is meant",
        "remove or rename one of them",
    )


def _is_metadata(path: Path) -> bool:
    """macOS AppleDouble files (``._<name>``) hold Finder metadata, never images."""
    return path.name.startswith("._")


def _nifti_files(root: Path) -> list[Path]:
    """NIfTI files directly in ``root`` and one folder level below it."""
    files = [*root.glob("*.nii"), *root.glob("*.nii.gz")]
    files += [*root.glob("*/*.nii"), *root.glob("*/*.nii.gz")]
    return sorted(f for f in files if f.is_file() and not _is_metadata(f))


def find_brats(root: Path) -> Source | None:
    """BraTS-style NIfTI files, flat or one folder per case; see the module docstring.

    A BraTS edition is recognised when its four channel names all occur (missing files of a case
    are then reported by :func:`~partseg.store.reading.read_case`); otherwise one folder per case
    with any consistent channel names is read (channels sorted, labels declared from the data).
    """
    if not root.is_dir():
        return None
    files = _nifti_files(root)
    partial: Source | None = None
    for pattern, sep, channels, labels in _BRATS_EDITIONS:
        by_case = _group_by_case(files, pattern, nested_only=False)
        if not by_case:
            continue
        source = Source("brats", root, _brats_cases(by_case, channels, sep), channels, labels)
        found = {mod for mods in by_case.values() for mod in mods}
        if set(channels) <= found:
            return source
        partial = partial or source
    by_case = _group_by_case(files, _FOLDER_RE, nested_only=True)
    channels = tuple(sorted({mod for mods in by_case.values() for mod in mods} - {"seg"}))
    if channels:
        return Source("brats", root, _brats_cases(by_case, channels, "_"), channels, None)
    return partial  # BraTS names with a channel missing from every case: read_case reports it


def _group_by_case(
    files: Sequence[Path], pattern: re.Pattern[str], *, nested_only: bool
) -> dict[str, dict[str, Path]]:
    """Case id -> channel name (or ``seg``) -> file, for the files whose name matches."""
    by_case: dict[str, dict[str, Path]] = {}
    for path in files:
        match = pattern.match(path.name)
        if match and (not nested_only or path.parent.name == match["id"]):
            mods = by_case.setdefault(match["id"], {})
            if match["mod"] in mods:  # a case folder and flat files, or .nii and .nii.gz
                _duplicate(match["id"], mods[match["mod"]], path, f"channel {match['mod']!r}")
            mods[match["mod"]] = path
    return by_case


def _brats_cases(
    by_case: dict[str, dict[str, Path]], channels: tuple[str, ...], sep: str
) -> tuple[SourceCase, ...]:
    """One case per id; a missing channel keeps its expected path so reading reports it."""
    cases = []
    for case_id, mods in sorted(by_case.items()):
        first = next(iter(mods.values()))
        ext = ".nii.gz" if first.name.endswith(".gz") else ".nii"
        images = tuple(mods.get(ch, first.parent / f"{case_id}{sep}{ch}{ext}") for ch in channels)
        cases.append(SourceCase(case_id, images, mods.get("seg"), channels, "nifti"))
    return tuple(cases)


def find_msd(root: Path, split: str = "train") -> Source | None:
    """MSD / nnU-Net raw layout (``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``)."""
    meta_file = root / "dataset.json"
    if not root.is_dir() or not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as err:
        raise InputError(
            "(dataset)", meta_file, f"unreadable dataset.json: {err}", "fix the JSON file"
        ) from err
    channels = _msd_channels(meta, meta_file)
    labels = _msd_labels(meta, meta_file)
    ending = str(meta.get("file_ending", ".nii.gz"))
    folders = {"train": ["imagesTr"], "test": ["imagesTs"], "all": ["imagesTr", "imagesTs"]}
    if split not in folders:
        raise InputError("(dataset)", root, f"unknown split {split!r}", "use train, test or all")
    cases: list[SourceCase] = []
    for folder in folders[split]:
        cases += _msd_cases(root / folder, root / "labelsTr", channels, ending)
    return Source("msd", root, tuple(cases), channels, labels)


def _msd_channels(meta: dict, meta_file: Path) -> tuple[str, ...]:
    names = meta.get("channel_names", meta.get("modality"))
    if not isinstance(names, dict) or not names:
        raise InputError(
            "(dataset)",
            meta_file,
            "dataset.json has no 'channel_names' or 'modality'",
            'add e.g. "channel_names": {"0": "T1"}',
        )
    return tuple(str(names[k]) for k in sorted(names, key=int))


def _msd_labels(meta: dict, meta_file: Path) -> dict[int, str] | None:
    """MSD writes ``{"0": "background"}``; nnU-Net v2 writes ``{"background": 0}``."""
    raw = meta.get("labels")
    if not raw:
        return None
    labels: dict[int, str] = {}
    for key, value in raw.items():
        if isinstance(value, int | float) and not str(key).lstrip("-").isdigit():
            labels[int(value)] = str(key)
        elif str(key).lstrip("-").isdigit():
            labels[int(key)] = str(value)
        else:
            raise InputError(
                "(dataset)",
                meta_file,
                f"label entry {key!r}: {value!r} is not a single value",
                "region-based labels are not supported; list one integer per class",
            )
    return dict(sorted(labels.items()))


def _msd_cases(
    images_dir: Path, labels_dir: Path, channels: Sequence[str], ending: str
) -> list[SourceCase]:
    if not images_dir.is_dir():
        return []
    files = sorted(p for p in images_dir.iterdir() if p.name.endswith(ending) and p.is_file())
    files = [p for p in files if not _is_metadata(p)]  # odd ids such as ..case2 are reported
    per_channel: dict[str, dict[int, Path]] = {}
    single: dict[str, Path] = {}
    for path in files:
        stem = path.name[: -len(ending)]
        match = _CHANNEL_RE.match(stem)
        if match:
            per_channel.setdefault(match["id"], {})[int(match["ch"])] = path
        else:
            single[stem] = path
    is_train = images_dir.name == "imagesTr"
    cases = []
    for case_id in sorted(set(per_channel) & set(single)):
        _duplicate(case_id, single[case_id], next(iter(per_channel[case_id].values())))
    for case_id in sorted(set(per_channel) | set(single)):
        if case_id in per_channel:
            found = per_channel[case_id]
            images = tuple(
                found.get(i, images_dir / f"{case_id}_{i:04d}{ending}")
                for i in range(len(channels))
            )
        else:
            images = (single[case_id],)
        label = labels_dir / f"{case_id}{ending}"
        has_label = is_train and label.is_file()
        cases.append(SourceCase(case_id, images, label if has_label else None, tuple(channels)))
    return cases


def find_hdf5(root: Path, options: ReadOptions) -> Source | None:
    """One HDF5 file per case; channel names from the first file's image dataset."""
    files = _files_with(root, _HDF5_SUFFIXES)
    if not files:
        return None
    import h5py

    cases = []
    channels: tuple[str, ...] = ()
    for path in files:
        case_id = path.name.rsplit(".", 1)[0]
        try:
            with h5py.File(path, "r") as f:
                if not channels and options.image_key in f:
                    channels = _channel_names(
                        f[options.image_key].shape, f[options.image_key].attrs
                    )
                has_label = options.label_key in f
        except OSError:
            has_label = False  # read_case reports the unreadable file
        cases.append(SourceCase(case_id, (path,), path if has_label else None, (), "hdf5"))
    channels = channels or ("ch0",)
    cases = [_with_channels(c, channels) for c in cases]
    return Source("hdf5", root, tuple(cases), channels, None)


def find_numpy(root: Path, options: ReadOptions) -> Source | None:
    """``<id>.npy`` (+ ``<id>_label.npy`` / ``<id>_seg.npy``) and ``<id>.npz`` files."""
    files = _files_with(root, (".npy", ".npz"))
    if not files:
        return None
    stems = {p.name[:-4] for p in files if p.suffix == ".npy"}
    cases = []
    channels: tuple[str, ...] = ()
    for path in files:
        stem = path.name[:-4]
        if path.suffix == ".npy":
            base = re.sub(r"_(label|seg)$", "", stem)
            if base != stem and base in stems:
                continue  # a label file, attached to its image below
            label = next(
                (
                    path.with_name(f"{stem}_{s}.npy")
                    for s in ("label", "seg")
                    if path.with_name(f"{stem}_{s}.npy").is_file()
                ),
                None,
            )
            cases.append(SourceCase(stem, (path,), label, (), "npy"))
            channels = channels or _peek_numpy(path, None)
        else:
            keys = _npz_keys(path)
            label = path if options.label_key in keys else None
            cases.append(SourceCase(stem, (path,), label, (), "npz"))
            channels = channels or _peek_numpy(path, options.image_key)
    channels = channels or ("ch0",)
    return Source("numpy", root, tuple(_with_channels(c, channels) for c in cases), channels, None)


def _files_with(root: Path, suffixes: Sequence[str]) -> list[Path]:
    if root.is_file():
        return [root] if root.suffix in suffixes else []
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.suffix in suffixes and p.is_file())


def _with_channels(case: SourceCase, channels: tuple[str, ...]) -> SourceCase:
    return SourceCase(case.case_id, case.image_files, case.label_file, channels, case.fmt)


def _channel_names(shape: Sequence[int], attrs: object = None) -> tuple[str, ...]:
    names = None
    if attrs is not None and "channels" in attrs:  # type: ignore[operator]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in attrs["channels"]]  # type: ignore[index]
    count = shape[0] if len(shape) == 4 else 1
    if names and len(names) == count:
        return tuple(names)
    return tuple(f"ch{i}" for i in range(count))


def _peek_numpy(path: Path, key: str | None) -> tuple[str, ...]:
    try:
        if key is None:
            return _channel_names(np.load(path, mmap_mode="r").shape)
        with np.load(path) as archive:
            return _channel_names(archive[key].shape) if key in archive.files else ()
    except (OSError, ValueError, KeyError):
        return ()  # read_case reports the unreadable file


def _npz_keys(path: Path) -> list[str]:
    try:
        with np.load(path) as archive:
            return list(archive.files)
    except (OSError, ValueError):
        return []


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


#: The dataset layouts ``partseg ingest --layout`` accepts, in the order ``auto`` tries them.
LAYOUTS: Registry[Layout] = Registry("layout")
LAYOUTS.add(
    "msd",
    Layout(
        lambda root, _options, split: find_msd(root, split),
        "dataset.json with imagesTr/ or imagesTs/ of NIfTI files",
    ),
    help="Medical Segmentation Decathlon / nnU-Net raw folder (dataset.json, imagesTr/)",
)
LAYOUTS.add(
    "brats",
    Layout(
        lambda root, _options, _split: find_brats(root),
        "<id>_t1/_t1ce/_t2/_flair[/_seg].nii[.gz] or <id>-t1n/-t1c/-t2w/-t2f[-seg].nii[.gz], "
        "flat or one folder per case, or <id>/<id>_<channel>[/<id>_seg].nii[.gz] folders",
    ),
    help="BraTS 2017-2023 NIfTI files, or <id>/<id>_<channel>.nii.gz folders",
)
LAYOUTS.add(
    "hdf5",
    Layout(
        lambda root, options, _split: find_hdf5(root, options),
        "*.h5 / *.hdf5 files with an image dataset",
    ),
    help="one .h5/.hdf5 file per case (image and optional label datasets)",
)
LAYOUTS.add(
    "numpy",
    Layout(
        lambda root, options, _split: find_numpy(root, options),
        "*.npy images (optional <id>_label.npy or <id>_seg.npy) or *.npz with image/label",
    ),
    help="<id>.npy (+ <id>_label.npy) or <id>.npz files",
)
