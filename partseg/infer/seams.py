"""How visible are the partition seams of a stitched prediction?

Two measures:

* :func:`reference_error` compares with whole-volume inference (``--partition none``): max and
  mean absolute difference of the values, and the share of voxels whose label changes.
* :func:`seam_index` needs no reference: the mean absolute change of the prediction between two
  neighbouring voxels on either side of a core face, divided by the same mean between
  neighbouring voxels inside cores. 1.0 means the faces look like any other place (no seam);
  a visible seam gives values well above 1.

Both stream over the volume one channel and one slab at a time, so they also work on a zarr
probability store larger than RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from partseg.errors import GeometryError
from partseg.infer.stitch import labels_from_probabilities


def reference_error(
    stitched: Any,
    reference: Any,
    *,
    region_order: Sequence[int] | None = None,
    slab: int = 32,
) -> dict[str, float]:
    """Error of a stitched prediction against the whole-volume reference.

    Args:
        stitched: (K, Z, Y, X) probabilities (softmax, or one sigmoid channel), numpy or zarr;
            logits work for K > 1 (argmax is the same) but not for one channel.
        reference: the same values from whole-volume inference.
        region_order: the class id of each channel of a region model (one sigmoid per region,
            labelled by nnU-Net's region rule); None for classes.
        slab: Z slices processed at a time.

    Returns:
        ``max_abs``, ``mean_abs`` and ``changed_label_share`` (the label of
        :func:`~partseg.infer.stitch.labels_from_probabilities` differs: argmax over K,
        ``p > 0.5`` for one channel, or the region rule).

    Example:
        >>> a = np.zeros((2, 1, 2, 2)); b = a.copy(); b[1, 0, 0, 0] = 1
        >>> reference_error(a, b)
        {'max_abs': 1.0, 'mean_abs': 0.125, 'changed_label_share': 0.25}
    """
    if tuple(stitched.shape) != tuple(reference.shape):
        raise GeometryError(
            f"stitched {tuple(stitched.shape)} and reference {tuple(reference.shape)} differ"
        )
    max_abs, total, changed = 0.0, 0.0, 0
    depth = stitched.shape[1]
    for z in range(0, depth, slab):
        a = np.asarray(stitched[:, z : z + slab], np.float64)
        b = np.asarray(reference[:, z : z + slab], np.float64)
        diff = np.abs(a - b)
        max_abs = max(max_abs, float(diff.max()))
        total += float(diff.sum())
        a_labels = labels_from_probabilities(a, region_order)
        changed += int((a_labels != labels_from_probabilities(b, region_order)).sum())
    voxels = int(np.prod(stitched.shape[1:]))
    return {
        "max_abs": max_abs,
        "mean_abs": total / (voxels * stitched.shape[0]),
        "changed_label_share": changed / voxels,
    }


def _axis_sums(values: np.ndarray, axis: int, core: int) -> tuple[float, int, float, int]:
    """Sum and count of |Δ| between neighbours along ``axis``: across faces, inside cores."""
    diff = np.abs(np.diff(values, axis=axis))  # diff[i] = v[i + 1] - v[i]
    n = diff.shape[axis]
    across = np.zeros(n, bool)
    across[np.arange(core - 1, n, core)] = True  # i + 1 is a multiple of the core
    shape = [1] * diff.ndim
    shape[axis] = n
    across = across.reshape(shape)
    per_position = np.prod([s for a, s in enumerate(diff.shape) if a != axis])
    face_sum = float(np.where(across, diff, 0).sum())
    faces = int(across.sum()) * int(per_position)
    return face_sum, faces, float(diff.sum()) - face_sum, diff.size - faces


def seam_index(values: Any, core: Sequence[int], *, slab: int | None = None) -> float:
    """Reference-free seam measure: mean |Δ| across core faces / mean |Δ| inside cores.

    Args:
        values: (K, Z, Y, X) or (Z, Y, X) probabilities (numpy or zarr) of a stitched volume.
        core: the partition's core size (Z, Y, X); axes of core 1 (2D slices) count every
            neighbour pair as a face and are skipped.
        slab: Z slices loaded at a time (default: whole cores along Z, at least 32 slices).

    Returns:
        The ratio; ``nan`` when there are no faces or the interior is constant.

    Example:
        >>> ramp = np.tile(np.arange(4.0), (1, 4, 1))  # (Z, Y, X), smooth along X
        >>> seam_index(ramp, (1, 2, 2))
        1.0
        >>> ramp[:, :, 2:] += 10                      # a step on the core face at x = 2
        >>> seam_index(ramp, (1, 2, 2))
        11.0
    """
    channels = values.shape[0] if values.ndim == 4 else 1
    depth = values.shape[-3]
    if slab is None:
        slab = max(1, -(-32 // core[0])) * core[0]
    slab = max(core[0], slab - slab % core[0])
    face_sum = inner_sum = 0.0
    faces = inner = 0
    for k in range(channels):
        previous_last: np.ndarray | None = None
        for z in range(0, depth, slab):
            block = values[k, z : z + slab] if values.ndim == 4 else values[z : z + slab]
            block = np.asarray(block, np.float64)
            for axis in (1, 2):
                if core[axis] > 1:
                    sums = _axis_sums(block, axis, core[axis])
                    face_sum, faces = face_sum + sums[0], faces + sums[1]
                    inner_sum, inner = inner_sum + sums[2], inner + sums[3]
            if core[0] > 1:
                # Z differences inside the block, plus the pair straddling the slab boundary
                sums = _axis_sums(block, 0, core[0])
                face_sum, faces = face_sum + sums[0], faces + sums[1]
                inner_sum, inner = inner_sum + sums[2], inner + sums[3]
                if previous_last is not None:  # z is a multiple of the core: a face
                    face_sum += float(np.abs(block[0] - previous_last).sum())
                    faces += block[0].size
            previous_last = block[-1]
    if faces == 0 or inner == 0 or inner_sum == 0:
        return float("nan")
    return (face_sum / faces) / (inner_sum / inner)


def seam_report(
    values: Any,
    core: Sequence[int],
    reference: Any | None = None,
    *,
    region_order: Sequence[int] | None = None,
) -> dict:
    """Seam index, plus the reference errors when a whole-volume reference is given."""
    report: dict[str, float] = {"seam_index": seam_index(values, core)}
    if reference is not None:
        report.update(reference_error(values, reference, region_order=region_order))
    return report
