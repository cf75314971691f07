"""The ``"seam"`` section of a case: seam measures from the probability stores of a prediction.

``partseg predict --save-probabilities --probabilities-format zarr`` writes
``<case>_probabilities.zarr`` (float16 (K, Z, Y, X), attribute ``core``); the measures are those of
:mod:`partseg.infer.seams`, streamed slab by slab.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from partseg.errors import InputError

__all__ = ["SEAM_TARGET", "SeamSources", "check_seam_files", "probability_path", "seam_section"]

#: The one target of the ``"seam"`` section: the probability maps of all classes together.
SEAM_TARGET = "probabilities"


@dataclass(frozen=True)
class SeamSources:
    """Where the probability stores of the seam measures are.

    Attributes:
        folder: ``<case>_probabilities.zarr`` of the partitioned prediction (``partseg predict
            --save-probabilities --probabilities-format zarr``).
        reference: the same from whole-volume inference (``--partition none``), or None.
    """

    folder: Path
    reference: Path | None = None


def probability_path(folder: str | os.PathLike, case_id: str) -> Path:
    """The probability store ``partseg predict`` writes for ``case_id`` in ``folder``.

    Example:
        >>> probability_path("out", "c1").as_posix()
        'out/c1_probabilities.zarr'
    """
    return Path(folder) / f"{case_id}_probabilities.zarr"


def _existing(case_id: str, folder: Path, what: str) -> Path:
    """The probability store of ``case_id`` in ``folder``; InputError naming it when missing."""
    path = probability_path(folder, case_id)
    if not path.exists():
        raise InputError(
            case_id,
            path,
            f"the {what} probability file is missing",
            "write it with partseg predict --save-probabilities --probabilities-format zarr "
            f"--out {folder}",
        )
    return path


def _open_probabilities(case_id: str, folder: Path, what: str) -> tuple[Any, Path]:
    """The read-only (K, Z, Y, X) zarr array of ``case_id`` in ``folder``, and its path."""
    import zarr

    path = _existing(case_id, folder, what)
    try:
        return zarr.open_array(str(path), mode="r"), path
    except Exception as err:  # zarr raises several types for a broken or foreign store
        raise InputError(
            case_id,
            path,
            f"cannot open the {what} probabilities: {err}",
            "predict the case again with partseg predict --probabilities-format zarr",
        ) from err


def check_seam_files(sources: SeamSources, case_ids: Iterable[str]) -> None:
    """Raise InputError naming the first case whose probability file is missing."""
    for case_id in case_ids:
        _existing(case_id, sources.folder, "stitched")
        if sources.reference is not None:
            _existing(case_id, sources.reference, "reference")


def seam_section(case_id: str, sources: SeamSources) -> dict[str, dict[str, float]]:
    """The ``"seam"`` result section of one case: ``{"probabilities": {metric: value}}``.

    Metrics: ``seam_index`` (mean |delta p| across core faces / mean |delta p| between interior
    neighbours; 1.0 = no seam; NaN when the prediction has a single core), and with a
    reference ``max_abs``, ``mean_abs`` and ``changed_label_share`` (the label differs: argmax,
    or the region rule when the file records ``region_order``), all from
    :mod:`partseg.infer.seams`, streamed slab by slab.

    Raises:
        InputError: a probability file is missing or unreadable, has no ``core`` attribute, or
            the stitched and reference arrays differ in shape.
    """
    from partseg.infer.seams import reference_error, seam_index

    stitched, path = _open_probabilities(case_id, sources.folder, "stitched")  # (K, Z, Y, X)
    core = stitched.attrs.get("core")
    if core is None or len(core) != stitched.ndim - 1:
        raise InputError(
            case_id,
            path,
            f"the probabilities have no 'core' attribute of {stitched.ndim - 1} sizes "
            f"(got {core!r})",
            "write them with partseg predict, which records the partition core",
        )
    metrics = {"seam_index": seam_index(stitched, [int(c) for c in core])}
    if sources.reference is not None:
        reference, ref_path = _open_probabilities(case_id, sources.reference, "reference")
        if tuple(reference.shape) != tuple(stitched.shape):
            raise InputError(
                case_id,
                f"{path} vs {ref_path}",
                f"stitched probabilities {tuple(stitched.shape)} and reference "
                f"{tuple(reference.shape)} differ in shape (K, Z, Y, X)",
                "use a reference predicted from the same store and model",
            )
        order = stitched.attrs.get("region_order")  # recorded by predict for region models
        metrics.update(reference_error(stitched, reference, region_order=order))
    return {SEAM_TARGET: metrics}
