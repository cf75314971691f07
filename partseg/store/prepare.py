"""One case of an ingest run: read, check, crop, remap, resample, normalise, write.

:func:`prepare_case` turns a :class:`~partseg.store.sources.SourceCase` into store arrays and
case metadata with the run's :class:`CasePlan`; :func:`ingest_one` (and, for ``--crop
dataset``, :func:`foreground_of`) is what each worker process runs per case, returning an
:class:`Outcome` (bad cases as plain data, since exceptions with custom ``__init__`` do not
survive pickling). The run around them is :func:`partseg.store.ingest.ingest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from partseg.errors import InputError
from partseg.geometry import Box
from partseg.store import preprocess as pp
from partseg.store.reading import nifti_header, read_case
from partseg.store.settings import IngestSettings
from partseg.store.sources import ReadOptions, SourceCase
from partseg.store.writer import StoreWriter
from partseg.store.zarrstore import AXIS_ORDER_NOTE

__all__ = ["CasePlan", "Outcome", "error_fields", "foreground_of", "ingest_one", "prepare_case"]


@dataclass(frozen=True)
class CasePlan:
    """Everything a worker needs to turn a source case into store arrays (picklable)."""

    settings: IngestSettings
    channels: tuple[str, ...]
    classes: tuple[str, ...]
    mapping: dict[int, int]
    dataset_box: Box | None


def prepare_case(
    case: SourceCase, plan: CasePlan
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any], np.ndarray]:
    """Read, check and preprocess one case.

    Returns:
        image (C, Z, Y, X) float32, label (Z, Y, X) uint8 or None, case attrs, locations (N, 4).

    Raises:
        InputError: the case is bad (unreadable, inconsistent, labels outside the declared set).
    """
    s = plan.settings
    raw = read_case(case, ReadOptions(s.image_key, s.label_key))
    original_shape = tuple(int(n) for n in raw.image.shape[1:])  # (Z, Y, X)
    box = _crop_box(case, raw.image, plan)
    image = pp.crop(raw.image, box)  # (C, z, y, x)
    label = None
    if raw.label is not None:
        try:
            label = pp.crop(pp.remap_labels(raw.label, plan.mapping), box)  # check all voxels
        except ValueError as err:
            raise InputError(
                case.case_id,
                case.label_file,
                str(err),
                "declare every label value (--labels), or rerun with --skip-bad",
            ) from err
    spacing = raw.spacing
    if s.spacing is not None:
        image, label = pp.resample(image, label, raw.spacing, s.spacing)
        spacing = tuple(float(v) for v in s.spacing)  # type: ignore[assignment]
    image, normalization = pp.normalize(image, pp.resolve_normalization(s.normalize, plan.channels))
    n_classes = len(plan.classes)
    counts = pp.class_counts(label, n_classes) if label is not None else {}
    locations = (
        pp.sample_locations(label, n_classes, s.locations_per_class, f"{s.seed}:{case.case_id}")
        if label is not None
        else np.zeros((0, 4), np.int32)
    )
    attrs = {
        "case_id": case.case_id,
        "shape": list(image.shape[1:]),
        "spacing": list(spacing),
        "original_spacing": list(raw.spacing),
        "original_shape": list(original_shape),
        "crop_box": {"start": list(box.start), "size": list(box.size)},
        "affine": np.asarray(raw.affine).tolist(),
        "channels": list(plan.channels),
        "classes": list(plan.classes),
        "label_mapping": [[k, v] for k, v in plan.mapping.items()],
        "has_label": label is not None,
        "normalization": normalization,
        "voxel_counts": {str(k): v for k, v in counts.items()},
        "location_counts": {str(c): int((locations[:, 0] == c).sum()) for c in counts},
        "source_files": [str(p) for p in case.image_files]
        + ([str(case.label_file)] if case.label_file else []),
        "axis_order": AXIS_ORDER_NOTE,
    }
    header = nifti_header(case.image_files[0]) if case.fmt == "nifti" else None
    if header is not None:  # export writes the source's sform/qform codes back
        attrs["nifti_header"] = header
    return image, label, attrs, locations


def _crop_box(case: SourceCase, image: np.ndarray, plan: CasePlan) -> Box:
    shape = image.shape[1:]
    if plan.settings.crop == "none":
        return Box.whole(shape)
    if plan.settings.crop == "foreground":
        return pp.foreground_box(image)
    assert plan.dataset_box is not None
    try:
        return plan.dataset_box.clip(shape)[0]
    except Exception as err:
        raise InputError(
            case.case_id,
            case.image_files[0],
            f"the dataset crop box {plan.dataset_box} misses the volume of shape {shape}",
            "use --crop foreground",
        ) from err


@dataclass(frozen=True)
class Outcome:
    case_id: str
    error: dict[str, str] | None = None
    box: Box | None = None


def error_fields(err: InputError) -> dict[str, str]:
    """InputError as plain data: its custom __init__ does not survive pickling across processes."""
    return {"case": err.case, "path": err.path, "problem": err.problem, "hint": err.hint}


def ingest_one(case: SourceCase, plan: CasePlan, writer: StoreWriter) -> Outcome:
    """Prepare and write one case (runs in a worker process with ``--workers``)."""
    try:
        image, label, attrs, locations = prepare_case(case, plan)
    except InputError as err:
        return Outcome(case.case_id, error_fields(err))
    s = plan.settings
    writer.write_case(
        case.case_id,
        image,
        label,
        attrs,
        locations,
        s.chunks,
        dtype=s.dtype,
        channels_per_chunk=s.channels_per_chunk,
    )
    return Outcome(case.case_id)


def foreground_of(case: SourceCase, plan: CasePlan, writer: StoreWriter) -> Outcome:
    """First pass of ``--crop dataset``: the case's foreground box."""
    s = plan.settings
    try:
        raw = read_case(case, ReadOptions(s.image_key, s.label_key))
    except InputError as err:
        return Outcome(case.case_id, error_fields(err))
    return Outcome(case.case_id, box=pp.foreground_box(raw.image))
