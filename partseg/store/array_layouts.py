"""The array layouts: one HDF5 file per case, and NumPy ``.npy`` / ``.npz`` files.

Each ``find_*`` function returns a :class:`~partseg.store.sources.Source` (or None when the
folder holds no such file); :data:`HDF5` and :data:`NUMPY` are what
:data:`~partseg.store.sources.LAYOUTS` registers. Channel names come from an HDF5 image's
``channels`` attribute, else they are ``ch0, ch1, ...``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from partseg.store.sources import (
    Layout,
    ReadOptions,
    Source,
    SourceCase,
    unnamed_channels,
)

_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


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
    channels = channels or unnamed_channels(1)
    cases = [_with_channels(c, channels) for c in cases]
    named = channels != unnamed_channels(len(channels))
    return Source("hdf5", root, tuple(cases), channels, None, channels_named=named)


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
    channels = channels or unnamed_channels(1)
    cases = [_with_channels(c, channels) for c in cases]
    return Source("numpy", root, tuple(cases), channels, None, channels_named=False)


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
    return unnamed_channels(count)


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


HDF5 = Layout(
    lambda root, options, _split: find_hdf5(root, options),
    "*.h5 / *.hdf5 files with an image dataset",
)
NUMPY = Layout(
    lambda root, options, _split: find_numpy(root, options),
    "*.npy images (optional <id>_label.npy or <id>_seg.npy) or *.npz with image/label",
)
