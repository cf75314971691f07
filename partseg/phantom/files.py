"""Writing phantoms as NIfTI in the BraTS 2020 layout: atomic case folders, resumable runs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from partseg.errors import ConfigError
from partseg.phantom.cases import (
    DEFAULT_SHAPE,
    PhantomCase,
    case_files,
    case_id,
    check_args,
    make_case,
)

__all__ = ["is_complete", "write_case", "write_phantoms"]


def write_case(case: PhantomCase, out_dir: Path) -> Path:
    """Write ``case`` as ``out_dir/<id>/<id>_<channel>.nii.gz`` + ``<id>_seg.nii.gz``, atomically.

    The files are written into ``out_dir/.<id>.partial`` and the folder is renamed when
    complete; an existing case folder is replaced. Images are int16, the seg uint8, arrays
    transposed to NIfTI (X, Y, Z) order, with ``case.affine`` as qform and sform (1 mm).

    Returns:
        The case folder.

    Example:
        >>> import tempfile
        >>> folder = write_case(make_case(0, (24, 32, 32)), Path(tempfile.mkdtemp()))
        >>> sorted(p.name for p in folder.iterdir())[-1]
        'Phantom_001_t2.nii.gz'
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / case.case_id
    partial = out_dir / f".{case.case_id}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    for name, volume in zip(case.channels, case.image, strict=True):
        _save_nifti(partial / f"{case.case_id}_{name}.nii.gz", volume.astype(np.int16), case)
    _save_nifti(partial / f"{case.case_id}_seg.nii.gz", case.label.astype(np.uint8), case)
    _replace_dir(partial, final)
    return final


def _save_nifti(path: Path, volume: np.ndarray, case: PhantomCase) -> None:
    """Save a (Z, Y, X) array as a NIfTI (X, Y, Z) with the case's affine, in millimetres."""
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), case.affine)
    image.set_qform(case.affine, code=1)
    image.set_sform(case.affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)


def _replace_dir(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, replacing an existing ``target`` folder."""
    if not target.exists():
        os.replace(source, target)
        return
    trash = target.with_name(f".{target.name}.old")
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(target, trash)
    os.replace(source, target)
    shutil.rmtree(trash)


def is_complete(case_dir: Path, kind: str = "brats") -> bool:
    """Whether ``case_dir`` holds every file of a ``kind`` case named after the folder."""
    case_dir = Path(case_dir)
    return all(path.is_file() for path in case_files(case_dir, case_dir.name, kind))


def write_phantoms(
    out_dir: Path | str,
    cases: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    seed: int = 0,
    kind: str = "brats",
    prefix: str = "Phantom",
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write ``cases`` phantoms into ``out_dir`` (BraTS 2020 layout), resuming by default.

    A case whose folder already holds all its files is skipped unless ``overwrite``.

    Args:
        out_dir: output folder, created if missing.
        cases: number of cases (ids ``<prefix>_001`` ... ).
        shape, seed, kind, prefix: as in :func:`make_case`.
        overwrite: rewrite complete cases instead of skipping them.
        progress: show progress on stderr (a bar on a terminal, else lines).

    Returns:
        The case folders, in index order.

    Example:
        >>> import tempfile
        >>> folders = write_phantoms(tempfile.mkdtemp(), 2, (24, 32, 32), progress=False)
        >>> [f.name for f in folders]
        ['Phantom_001', 'Phantom_002']
    """
    from partseg.progress import Progress

    if cases < 1:
        raise ConfigError(f"phantom --count must be >= 1, got {cases}")
    check_args(0, shape, seed, kind, prefix)
    out_dir = Path(out_dir)
    folders = []
    with Progress(cases, f"phantom {kind}", unit="case", enabled=progress) as bar:
        for index in range(cases):
            folder = out_dir / case_id(index, prefix)
            if overwrite or not is_complete(folder, kind):
                folder = write_case(make_case(index, shape, seed, kind, prefix), out_dir)
            folders.append(folder)
            bar.update()
    return folders
