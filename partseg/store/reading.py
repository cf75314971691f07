"""Read one source case into arrays and check it.

:func:`read_case` reads a :class:`~partseg.store.sources.SourceCase` that discovery found with the
loader of its format (NIfTI/NRRD/MHA, HDF5, ``.npy`` or ``.npz``) into a
:class:`~partseg.store.sources.RawCase` in partseg's axis order (images (C, Z, Y, X) float32,
labels (Z, Y, X), the affine kept as stored in the NIfTI convention), and :func:`check_case`
rejects a case that cannot be used: each problem raises :class:`~partseg.errors.InputError`
naming the case, the file, the problem and what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partseg.errors import InputError
from partseg.store.sources import RawCase, ReadOptions, SourceCase

_AFFINE_ATOL = 1e-3


# ----------------------------------------------------------------------------------- reading


def read_case(case: SourceCase, options: ReadOptions | None = None) -> RawCase:
    """Read and check one case: image (C, Z, Y, X) float32, label (Z, Y, X), affine, spacing.

    Checks (each failure raises :class:`InputError` naming the case and file): a missing or
    unreadable/truncated file, channels of different shape or affine, an image and label of
    different shape or affine, NaN or Inf voxels, a label that is not integer-valued, an empty
    volume or an all-zero channel, a channel count different from the dataset's.

    Example (needs a dataset on disk, so it is not run as a test)::

        case = SourceCase("c1", (Path("c1.npy"),), None, ("ch0",), "npy")
        read_case(case).image.shape
        # -> (1, 12, 16, 20)
    """
    options = options or ReadOptions()
    readers = {"nifti": _read_nifti_case, "hdf5": _read_hdf5_case, "npy": _read_npy_case}
    readers["npz"] = _read_npz_case
    image, label, affine, spacing = readers[case.fmt](case, options)
    raw = RawCase(image, label, affine, spacing)
    check_case(case, raw)
    return raw


def _fail(case: SourceCase, path: object, problem: str, hint: str) -> InputError:
    return InputError(case.case_id, path, problem, hint)


def _load(case: SourceCase, path: Path, what: str, loader: Callable[[Path], object]) -> object:
    """Run ``loader(path)`` and turn any reader exception into an InputError."""
    if not path.exists():
        raise _fail(
            case,
            path,
            f"missing {what} file",
            "add the file, or rerun with --skip-bad to leave this case out",
        )
    try:
        return loader(path)
    except InputError:
        raise
    except Exception as err:
        raise _fail(
            case,
            path,
            f"unreadable or truncated {what} file ({type(err).__name__}: {err})",
            "re-download or re-export the file, or rerun with --skip-bad",
        ) from err


def _nifti_array(path: Path, integer: bool) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(array in file order (X, Y, Z[, C]), affine, zooms (X, Y, Z)) of a NIfTI/NRRD/MHA file."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj) if integer else img.get_fdata(dtype=np.float32)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        return np.asarray(data), np.asarray(img.affine, dtype=np.float64), zooms
    import torchio

    image = torchio.ScalarImage(path)  # data (C, X, Y, Z)
    data = image.data.numpy()
    data = np.moveaxis(data, 0, -1)
    if data.shape[-1] == 1:
        data = data[..., 0]
    return data, np.asarray(image.affine, dtype=np.float64), tuple(float(s) for s in image.spacing)


def nifti_header(path: Path) -> dict[str, Any] | None:
    """The header fields NIfTI export writes back: sform/qform codes, the qform and the units.

    Read at ingest from a case's first image file (its geometry is the case's) and kept in the
    case attrs as ``nifti_header``, so an exported prediction keeps the source's codes (e.g.
    sform 1 / qform 1 of a BraTS file, where nibabel alone would write 2 / 0). ``None`` for
    files that are not NIfTI (NRRD, MHA), which have no such codes.
    """
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    import nibabel as nib

    header = nib.load(str(path)).header  # only the header is read
    return {
        "sform_code": int(header["sform_code"]),
        "qform_code": int(header["qform_code"]),
        "qform": np.asarray(header.get_qform(), np.float64).tolist(),
        "xyzt_units": list(header.get_xyzt_units()),
    }


def _to_czyx(array: np.ndarray) -> np.ndarray:
    """(X, Y, Z) -> (1, Z, Y, X); (X, Y, Z, C) -> (C, Z, Y, X)."""
    if array.ndim == 3:
        return array.transpose(2, 1, 0)[None]
    if array.ndim == 4:
        return array.transpose(3, 2, 1, 0)
    raise ValueError(f"expected a 3D or 4D volume, got shape {array.shape}")


def _read_nifti_case(
    case: SourceCase, options: ReadOptions
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, tuple[float, float, float]]:
    channels: list[np.ndarray] = []
    affine: np.ndarray | None = None
    zooms: tuple[float, ...] = (1.0, 1.0, 1.0)
    for path in case.image_files:
        data, aff, zz = _load(case, path, "image", lambda p: _nifti_array(p, integer=False))  # type: ignore[misc]
        try:
            chans = _to_czyx(np.asarray(data, dtype=np.float32))
        except ValueError as err:
            raise _fail(case, path, str(err), "give 3D volumes, or one 4D volume") from err
        if channels and chans.shape[1:] != channels[0].shape:
            raise _fail(
                case,
                path,
                f"channel shape {chans.shape[1:]} differs from "
                f"{channels[0].shape} of {case.image_files[0].name} (Z, Y, X)",
                "resample all modalities to one grid before ingest",
            )
        if affine is not None and not np.allclose(aff, affine, atol=_AFFINE_ATOL):
            raise _fail(
                case,
                path,
                "channel affine differs from the first channel's",
                "co-register the modalities before ingest",
            )
        affine, zooms = aff if affine is None else affine, zz if affine is None else zooms
        channels.extend(chans)
    image = np.stack(channels).astype(np.float32, copy=False)  # (C, Z, Y, X)
    label = None
    if case.label_file is not None:
        data, aff, _ = _load(case, case.label_file, "label", lambda p: _nifti_array(p, True))  # type: ignore[misc]
        data = np.asarray(data)
        if data.ndim == 4 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise _fail(case, case.label_file, f"label is not 3D: shape {data.shape}", "")
        label = data.transpose(2, 1, 0)
        if affine is not None and not np.allclose(aff, affine, atol=_AFFINE_ATOL):
            raise _fail(
                case,
                case.label_file,
                "label affine differs from the image affine",
                "resample the label onto the image grid before ingest",
            )
    assert affine is not None
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    return image, label, affine, spacing


def _default_affine(spacing: Sequence[float]) -> np.ndarray:
    """NIfTI-convention affine for (Z, Y, X) spacing: diag(sx, sy, sz, 1)."""
    return np.diag([float(spacing[2]), float(spacing[1]), float(spacing[0]), 1.0])


def _as_image(case: SourceCase, path: Path, array: np.ndarray) -> np.ndarray:
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise _fail(
            case,
            path,
            f"image has shape {array.shape}",
            "store images as (C, Z, Y, X) or (Z, Y, X)",
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise _fail(case, path, f"image dtype {array.dtype} is not numeric", "store numbers")
    return np.asarray(array, dtype=np.float32)


def _read_hdf5_case(
    case: SourceCase, options: ReadOptions
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, tuple[float, float, float]]:
    import h5py

    path = case.image_files[0]

    def load(p: Path) -> tuple[np.ndarray, np.ndarray | None, dict]:
        with h5py.File(p, "r") as f:
            if options.image_key not in f:
                raise _fail(
                    case,
                    p,
                    f"no dataset {options.image_key!r} (found {sorted(f.keys())})",
                    "pass --hdf5-image NAME",
                )
            dset = f[options.image_key]
            attrs = {k: np.asarray(dset.attrs[k]) for k in ("spacing", "affine") if k in dset.attrs}
            image = dset[()]
            label = f[options.label_key][()] if options.label_key in f else None
            return image, label, attrs

    image, label, attrs = _load(case, path, "HDF5", load)  # type: ignore[misc]
    spacing = tuple(float(s) for s in attrs.get("spacing", (1.0, 1.0, 1.0)))
    affine = np.asarray(attrs["affine"], dtype=np.float64) if "affine" in attrs else None
    if affine is None or affine.shape != (4, 4):
        affine = _default_affine(spacing)
    return _as_image(case, path, image), label, affine, spacing  # type: ignore[return-value]


def _read_npy_case(
    case: SourceCase, options: ReadOptions
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, tuple[float, float, float]]:
    path = case.image_files[0]
    image = _load(case, path, "image", lambda p: np.load(p, allow_pickle=False))
    label = None
    if case.label_file is not None:
        label = _load(case, case.label_file, "label", lambda p: np.load(p, allow_pickle=False))
    spacing = (1.0, 1.0, 1.0)
    return _as_image(case, path, image), label, _default_affine(spacing), spacing  # type: ignore[arg-type,return-value]


def _read_npz_case(
    case: SourceCase, options: ReadOptions
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, tuple[float, float, float]]:
    path = case.image_files[0]

    def load(p: Path) -> tuple[np.ndarray, np.ndarray | None]:
        with np.load(p, allow_pickle=False) as archive:
            if options.image_key not in archive.files:
                raise _fail(
                    case,
                    p,
                    f"no array {options.image_key!r} (found {archive.files})",
                    "save the image under the key 'image' or pass --hdf5-image NAME",
                )
            image = archive[options.image_key]
            has = options.label_key in archive.files
            return image, archive[options.label_key] if has else None

    image, label = _load(case, path, "archive", load)  # type: ignore[misc]
    spacing = (1.0, 1.0, 1.0)
    return _as_image(case, path, image), label, _default_affine(spacing), spacing


# ------------------------------------------------------------------------------------ checks


def check_case(case: SourceCase, raw: RawCase) -> None:
    """Raise InputError when a read case is unusable; see :func:`read_case` for the list."""
    image_file = case.image_files[0]
    if raw.image.size == 0:
        raise _fail(case, image_file, f"empty image of shape {raw.image.shape}", "")
    if case.channel_names and raw.image.shape[0] != len(case.channel_names):
        raise _fail(
            case,
            image_file,
            f"{raw.image.shape[0]} channels, the dataset has "
            f"{len(case.channel_names)} ({', '.join(case.channel_names)})",
            "give every case the same channels",
        )
    finite = np.isfinite(raw.image)
    if not finite.all():
        c = int(np.argwhere(~finite)[0][0])
        raise _fail(
            case,
            _channel_file(case, c),
            f"{int((~finite).sum())} NaN or Inf voxels in channel {_channel_name(case, c)}",
            "fix the scan (e.g. replace NaN by 0) or rerun with --skip-bad",
        )
    for c in range(raw.image.shape[0]):
        if not raw.image[c].any():
            raise _fail(
                case,
                _channel_file(case, c),
                f"channel {_channel_name(case, c)} is all zero",
                "check the file, or rerun with --skip-bad",
            )
    if raw.label is not None:
        _check_label(case, raw)


def _check_label(case: SourceCase, raw: RawCase) -> None:
    label, path = raw.label, case.label_file
    assert label is not None
    if label.shape != raw.image.shape[1:]:
        raise _fail(
            case,
            path,
            f"label shape {label.shape} differs from image shape {raw.image.shape[1:]} (Z, Y, X)",
            "resample the label onto the image grid",
        )
    if label.dtype == bool:
        raw.label = label.astype(np.uint8)
        return
    if not np.issubdtype(label.dtype, np.number):
        raise _fail(case, path, f"label dtype {label.dtype} is not numeric", "store integers")
    if not np.issubdtype(label.dtype, np.integer):
        if not np.isfinite(label).all() or not np.array_equal(label, np.round(label)):
            raise _fail(
                case,
                path,
                "label has non-integer values",
                "labels must be class numbers; did you pass an image as label?",
            )
        raw.label = label.astype(np.int64)


def _channel_file(case: SourceCase, channel: int) -> Path:
    return case.image_files[channel] if len(case.image_files) > channel else case.image_files[0]


def _channel_name(case: SourceCase, channel: int) -> str:
    names = case.channel_names
    return names[channel] if channel < len(names) else str(channel)
