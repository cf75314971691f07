"""What ``partseg predict`` writes per case, committed atomically, and the resume manifest.

Per case, in ``OUT``:

* ``<case>.nii.gz``: labels in the original geometry and label values (``--export nifti``);
* ``<case>_probabilities.nii.gz`` (float32, original geometry) or
  ``<case>_probabilities.zarr`` (float16 (K, Z, Y, X) over the stored case, chunk = the mode's
  chunk, e.g. the core, streamed to disk) with ``--save-probabilities``.

Every file is written under a temporary name in ``OUT`` and renamed when complete (NIfTI via
:func:`partseg.atomic.atomic_path`, zarr as ``.tmp-<name>`` then renamed), so an output that
exists is whole. ``OUT/.partseg-predict.json`` (the :class:`Manifest`, rewritten atomically after
each case) records what made the outputs (checkpoints, settings, source) and which cases are
done: a rerun with the same models and settings skips them; other models or settings need
``--overwrite`` or another ``OUT``.

Example:
    >>> OutputSettings(probabilities="zarr").names("c1")
    ['c1.nii.gz', 'c1_probabilities.zarr']
    >>> check_case_name("../escape")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    partseg.errors.StoreError: case id '../escape' is not a safe name: it contains a path ...
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partseg.atomic import write_json
from partseg.errors import ConfigError, StoreError
from partseg.names import check_name

MANIFEST = ".partseg-predict.json"
MANIFEST_FORMAT = "partseg-predict"
TMP_PREFIX = ".tmp-"
INGEST_PREFIX = ".partseg-ingest-"


@dataclass(frozen=True)
class OutputSettings:
    """Which files a case gets.

    Attributes:
        labels: ``nifti`` (``<case>.nii.gz``) or ``none``.
        probabilities: None (not written), ``nifti`` or ``zarr``.
    """

    labels: str = "nifti"
    probabilities: str | None = None

    def __post_init__(self) -> None:
        if self.labels not in ("nifti", "none"):
            raise ConfigError(f"label export {self.labels!r}: use nifti or none")
        if self.probabilities not in (None, "nifti", "zarr"):
            raise ConfigError(f"probabilities format {self.probabilities!r}: use nifti or zarr")

    def names(self, case_id: str) -> list[str]:
        """The file names of ``case_id``'s outputs, in writing order."""
        names = [f"{case_id}.nii.gz"] if self.labels == "nifti" else []
        if self.probabilities is not None:
            suffix = ".zarr" if self.probabilities == "zarr" else ".nii.gz"
            names.append(f"{case_id}_probabilities{suffix}")
        return names


def check_case_name(case_id: str) -> str:
    """Return ``case_id`` if it can name a file inside the output folder, else StoreError.

    Case ids come from stores (untrusted input): one with a separator, a leading dot or ``..``
    would write outside ``OUT`` or over hidden files (the one rule of :mod:`partseg.names`).
    """
    return check_name(case_id, "case id", StoreError, "rename the case (re-ingest it)")


def zarr_sink(path: str | os.PathLike, attrs: Mapping[str, Any] | None = None):
    """A sink factory writing a zarr array at ``.tmp-<name>`` beside ``path``.

    :func:`commit` renames it to ``path`` once the case is complete.
    """
    from partseg.infer.stitch import ZarrBackend

    tmp = temporary(Path(path))

    def make(shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype) -> ZarrBackend:
        extra = {"axes": "KZYX" if len(shape) == 4 else "ZYX", "chunks": list(chunks)}
        return ZarrBackend.create(tmp, shape, chunks, dtype, attrs={**(attrs or {}), **extra})

    return make


def temporary(path: Path) -> Path:
    """The temporary name a folder output is written under (``OUT/.tmp-<name>``)."""
    return path.with_name(f"{TMP_PREFIX}{path.name}")


def commit(path: Path) -> Path:
    """Move the finished ``.tmp-<name>`` folder to ``path``, replacing an older one."""
    tmp = temporary(path)
    if path.exists():
        old = path.with_name(f"{TMP_PREFIX}old-{path.name}")
        _remove(old)
        path.rename(old)
        tmp.rename(path)
        _remove(old)
    else:
        tmp.rename(path)
    return path


def write_prediction(
    prediction: Any,
    case: Any,
    out: Path,
    label_mapping: Mapping[int, int],
    outputs: OutputSettings,
) -> list[Path]:
    """Write one case's outputs (see the module docstring); returns their paths.

    ``prediction`` is a :class:`~partseg.infer.pipeline.Prediction`; with zarr probabilities
    they were streamed to ``.tmp-<case>_probabilities.zarr`` (:func:`zarr_sink`) and are
    committed here.
    """
    from partseg.infer.export import export_case

    written: list[Path] = []
    if outputs.probabilities == "zarr":
        written.append(commit(out / outputs.names(case.id)[-1]))
    probabilities = None
    if outputs.probabilities == "nifti":
        probabilities = np.asarray(prediction.probabilities)
    labels = prediction.labels if outputs.labels == "nifti" else None
    written += export_case(
        case, labels, out, label_mapping, probabilities=probabilities, regions=prediction.regions
    )
    order = {name: i for i, name in enumerate(outputs.names(case.id))}
    return sorted(written, key=lambda p: order.get(p.name, len(order)))


@dataclass
class Manifest:
    """``OUT/.partseg-predict.json``: what made the outputs and which cases are done.

    Attributes:
        out: the output folder.
        identity: checkpoints, settings, outputs and source of this prediction (JSON values).
        cases: case id -> names of its committed outputs.
    """

    out: Path
    identity: dict[str, Any]
    cases: dict[str, list[str]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.out / MANIFEST

    @classmethod
    def open(cls, out: Path, identity: Mapping[str, Any], *, overwrite: bool) -> Manifest:
        """The manifest to continue (same identity), or a fresh one.

        Raises:
            ConfigError: ``OUT`` holds a prediction of other checkpoints, settings or source
                (pass ``--overwrite`` or choose another ``OUT``), or an unreadable manifest.
        """
        normal = json.loads(json.dumps(dict(identity), default=str))
        path = out / MANIFEST
        if overwrite or not path.is_file():
            return cls(out, normal)
        try:
            data = json.loads(path.read_text())
            recorded, cases = data["identity"], dict(data["cases"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"cannot read {path} ({err}); pass --overwrite to start the prediction afresh"
            ) from err
        if recorded != normal:
            changed = sorted(k for k in {*recorded, *normal} if recorded.get(k) != normal.get(k))
            raise ConfigError(
                f"{out} holds predictions made with other {', '.join(changed)} (see {path}); "
                "pass --overwrite to replace them or choose another --out"
            )
        return cls(out, normal, {str(k): list(v) for k, v in cases.items()})

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def done(self, case_id: str, names: Iterable[str]) -> bool:
        """True when ``case_id`` was finished with exactly these outputs and they all exist."""
        names = list(names)
        recorded = self.cases.get(case_id)
        return recorded == names and all((self.out / n).exists() for n in names)

    def record(self, case_id: str, names: Iterable[str]) -> None:
        """Mark ``case_id`` done (its outputs committed) and rewrite the manifest atomically."""
        self.cases[case_id] = list(names)
        write_json(
            self.path,
            {"format": MANIFEST_FORMAT, "identity": self.identity, "cases": self.cases},
        )


def clean_leftovers(out: Path, names: Iterable[str], *, keep: str | None = None) -> list[str]:
    """Remove what an interrupted prediction left in ``OUT``; returns the names removed.

    That is: unfinished zarr outputs (``.tmp-<case>_probabilities.zarr``, ``.tmp-<name>``,
    ``.tmp-old-<name>``), ``.partseg-ingest-*`` temporary stores other than ``keep`` (the one
    this run reuses), and atomic-write temporaries of the given output names and of the
    manifest (``.<name>.<random>...``). Nothing else in ``OUT`` is touched.
    """
    names = list(names)
    prefixes = tuple(f".{name}." for name in [*names, MANIFEST])
    tmp = {temporary(Path(n)).name for n in names} | {f"{TMP_PREFIX}old-{n}" for n in names}
    removed = []
    for entry in sorted(out.iterdir()) if out.is_dir() else []:
        name = entry.name
        stale_ingest = name.startswith(INGEST_PREFIX) and name != keep
        stale_zarr = name.startswith(TMP_PREFIX) and name.endswith("_probabilities.zarr")
        if stale_zarr or name in tmp or stale_ingest or name.startswith(prefixes):
            _remove(entry)
            removed.append(name)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
