"""The NIfTI folder layouts: BraTS (every edition), MSD / nnU-Net raw folders, nnU-Net imagesTs.

Each ``find_*`` function looks at file names only and returns a
:class:`~partseg.store.sources.Source` (or None when the folder does not hold the layout); the
:class:`~partseg.store.sources.Layout` objects at the end are what
:data:`~partseg.store.sources.LAYOUTS` registers. See :mod:`partseg.store.sources` for the
layouts' file naming.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from partseg.errors import InputError
from partseg.store.editions import BRATS23_CHANNELS, BRATS_CHANNELS
from partseg.store.regions import Regions, parse_nnunet_labels
from partseg.store.sources import (
    Layout,
    Source,
    SourceCase,
    duplicate,
    is_metadata,
    unnamed_channels,
)

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


def _nifti_files(root: Path) -> list[Path]:
    """NIfTI files directly in ``root`` and one folder level below it."""
    files = [*root.glob("*.nii"), *root.glob("*.nii.gz")]
    files += [*root.glob("*/*.nii"), *root.glob("*/*.nii.gz")]
    return sorted(f for f in files if f.is_file() and not is_metadata(f))


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
                duplicate(match["id"], mods[match["mod"]], path, f"channel {match['mod']!r}")
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
    labels, regions = _msd_labels(meta, meta_file)
    ending = str(meta.get("file_ending", ".nii.gz"))
    folders = {"train": ["imagesTr"], "test": ["imagesTs"], "all": ["imagesTr", "imagesTs"]}
    if split not in folders:
        raise InputError("(dataset)", root, f"unknown split {split!r}", "use train, test or all")
    cases: list[SourceCase] = []
    for folder in folders[split]:
        cases += _msd_cases(root / folder, root / "labelsTr", channels, ending)
    return Source("msd", root, tuple(cases), channels, labels, regions)


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


def _msd_labels(meta: dict, meta_file: Path) -> tuple[dict[int, str] | None, Regions | None]:
    """MSD writes ``{"0": "background"}``; nnU-Net v2 writes ``{"background": 0}``, and for
    region-based training (its BraTS setting) lists of values plus ``regions_class_order``."""
    raw = meta.get("labels")
    if not raw:
        return None, None
    if not isinstance(raw, dict):
        raise InputError("(dataset)", meta_file, f"'labels' is not a mapping: {raw!r}",
                         'write e.g. "labels": {"background": 0, "tumor": 1}')  # fmt: skip
    if all(str(key).lstrip("-").isdigit() for key in raw):  # MSD: value -> name
        return dict(sorted((int(k), str(v)) for k, v in raw.items())), None
    try:
        return parse_nnunet_labels(raw, meta.get("regions_class_order"))
    except ValueError as err:
        raise InputError(
            "(dataset)",
            meta_file,
            str(err),
            "write one integer per class, or nnU-Net's region form: lists of values and "
            '"regions_class_order" (e.g. "whole_tumor": [1, 2, 3], ..., '
            '"regions_class_order": [1, 2, 3])',
        ) from err


def _msd_cases(
    images_dir: Path, labels_dir: Path, channels: Sequence[str], ending: str
) -> list[SourceCase]:
    if not images_dir.is_dir():
        return []
    files = sorted(p for p in images_dir.iterdir() if p.name.endswith(ending) and p.is_file())
    files = [p for p in files if not is_metadata(p)]  # odd ids such as ..case2 are reported
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
        duplicate(case_id, single[case_id], next(iter(per_channel[case_id].values())))
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


def find_nnunet_images(root: Path) -> Source | None:
    """A flat folder of ``<id>_<XXXX>.nii[.gz]`` channel files without ``dataset.json``.

    nnU-Net's ``imagesTs`` (what ``nnUNetv2_predict -i`` reads): file ``<id>_0002.nii.gz`` is
    channel 2 of case ``<id>``. The files do not name the channels, so they are ``ch0, ch1,
    ...`` (:func:`unnamed_channels`): ``partseg predict --input`` names them after the model's
    channels, ``partseg ingest --channel-map ch0=t1,...`` renames them. The channel count is
    the largest index found plus one; a case lacking one keeps its expected path, so reading
    reports the missing file. No labels.
    """
    if not root.is_dir() or (root / "dataset.json").is_file():
        return None
    found: dict[str, dict[int, Path]] = {}
    ending: dict[str, str] = {}
    for path in _nifti_files(root):
        stem, ext = _split_nifti(path.name)
        match = _CHANNEL_RE.match(stem)
        if path.parent != root or match is None:
            continue
        channels = found.setdefault(match["id"], {})
        if int(match["ch"]) in channels:  # .nii and .nii.gz of one channel
            duplicate(match["id"], channels[int(match["ch"])], path, f"channel {match['ch']}")
        channels[int(match["ch"])] = path
        ending[match["id"]] = ext
    if not found:
        return None
    n = 1 + max(i for channels in found.values() for i in channels)
    names = unnamed_channels(n)
    cases = tuple(
        SourceCase(
            case_id,
            tuple(files.get(i, root / f"{case_id}_{i:04d}{ending[case_id]}") for i in range(n)),
            None,
            names,
        )
        for case_id, files in sorted(found.items())
    )
    return Source("nnunet-images", root, cases, names, None, channels_named=False)


def _split_nifti(name: str) -> tuple[str, str]:
    """``"a_0000.nii.gz"`` -> ``("a_0000", ".nii.gz")``."""
    ext = ".nii.gz" if name.endswith(".nii.gz") else ".nii"
    return name[: -len(ext)], ext


MSD = Layout(
    lambda root, _options, split: find_msd(root, split),
    "dataset.json with imagesTr/ or imagesTs/ of NIfTI files",
)
BRATS = Layout(
    lambda root, _options, _split: find_brats(root),
    "<id>_t1/_t1ce/_t2/_flair[/_seg].nii[.gz] or <id>-t1n/-t1c/-t2w/-t2f[-seg].nii[.gz], "
    "flat or one folder per case, or <id>/<id>_<channel>[/<id>_seg].nii[.gz] folders",
)
NNUNET_IMAGES = Layout(
    lambda root, _options, _split: find_nnunet_images(root),
    "<id>_0000.nii[.gz], <id>_0001.nii[.gz], ... in one folder without dataset.json",
)
