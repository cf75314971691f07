"""From network outputs to probabilities and labels: the activations and the label rules.

Every prediction path (the stitcher, the layer-wise engine, the ensemble, validation) turns
logits into probabilities and labels with these functions, one voxel at a time, so finalising a
volume chunk by chunk is exact:

* K > 1 class channels: softmax over the classes; labels by argmax.
* One channel (a binary model trained with a sigmoid): the foreground probability; label 1
  where it exceeds 0.5.
* One channel per region (region-based training, :mod:`partseg.store.regions`): a sigmoid per
  channel; labels by nnU-Net's region rule (:func:`labels_from_regions`).

Example:
    >>> p = activate(np.zeros((3, 2), np.float32), "sigmoid")          # 3 regions, 2 voxels
    >>> labels_from_probabilities(p + [[0.1], [0.1], [0.0]], region_order=(1, 2, 3)).tolist()
    [2, 2]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from partseg.errors import GeometryError

__all__ = [
    "ACTIVATIONS",
    "activate",
    "check_activation",
    "default_activation",
    "labels_from_probabilities",
    "labels_from_regions",
    "sigmoid",
    "softmax",
]

#: The activations of network outputs (``none`` keeps logits).
ACTIVATIONS = ("softmax", "sigmoid", "none")


def softmax(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Numerically stable softmax in float32."""
    values = values.astype(np.float32, copy=False)
    shifted = np.exp(values - values.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def sigmoid(values: np.ndarray) -> np.ndarray:
    """Numerically stable logistic sigmoid in float32 (no overflow for large |x|).

    Example:
        >>> sigmoid(np.array([-1000.0, 0.0, 1000.0])).tolist()
        [0.0, 0.5, 1.0]
    """
    values = values.astype(np.float32, copy=False)
    e = np.exp(-np.abs(values))  # in (0, 1]
    return np.where(values >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def default_activation(channels: int, *, regions: bool = False) -> str:
    """The activation of a network with ``channels`` outputs: ``sigmoid`` for 1 or for region
    outputs, else softmax.

    Example:
        >>> default_activation(1), default_activation(4), default_activation(3, regions=True)
        ('sigmoid', 'softmax', 'sigmoid')
    """
    return "sigmoid" if regions or int(channels) == 1 else "softmax"


def activate(values: np.ndarray, activation: str) -> np.ndarray:
    """Apply ``activation`` (``softmax`` over axis 0, ``sigmoid`` or ``none``) to (K, *S) values.

    Example:
        >>> activate(np.zeros((2, 1)), "softmax").tolist()
        [[0.5], [0.5]]
    """
    if activation not in ACTIVATIONS:
        raise GeometryError(
            f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
        )
    if activation == "softmax":
        return softmax(values, axis=0)
    if activation == "sigmoid":
        return sigmoid(values)
    return values


def labels_from_probabilities(
    probabilities: np.ndarray, region_order: Sequence[int] | None = None
) -> np.ndarray:
    """Class ids (*S) uint8 from probabilities (K, *S): ``p[0] > 0.5`` for K == 1, else argmax;
    with ``region_order``, nnU-Net's region rule (:func:`labels_from_regions`).

    The one place where partseg turns probabilities into labels. With one channel (a sigmoid
    model of a binary task) the channel is the foreground probability, so the label is 1 where
    it exceeds 0.5; with K > 1 channels it is the most probable class (ties: the lowest id).
    Works on any array-like with ``shape`` (numpy; zarr slabs via ``np.asarray``).

    Example:
        >>> labels_from_probabilities(np.array([[0.2, 0.5, 0.7]])).tolist()
        [0, 0, 1]
        >>> labels_from_probabilities(np.array([[0.2, 0.6], [0.8, 0.4]])).tolist()
        [1, 0]
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim < 1 or probabilities.shape[0] < 1:
        raise GeometryError(
            f"probabilities must be (K, *spatial) with K >= 1, got shape {probabilities.shape}"
        )
    if region_order is not None:
        return labels_from_regions(probabilities, region_order)
    if probabilities.shape[0] == 1:
        return (probabilities[0] > 0.5).astype(np.uint8)
    return np.argmax(probabilities, axis=0).astype(np.uint8)


def labels_from_regions(probabilities: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Class ids (*S) uint8 from region probabilities (R, *S) by nnU-Net's rule.

    Region ``r`` writes ``order[r]`` (``regions_class_order``) wherever its probability
    exceeds 0.5, in region order, so each voxel keeps the value of the **last** region above
    0.5 (0 where none is): with BraTS's nested regions (whole tumour, tumour core, enhancing)
    the innermost predicted region wins. A later region wins even where an earlier one is
    below 0.5, as in nnU-Net (``convert_probabilities_to_segmentation``).

    Example:
        >>> p = np.array([[0.9, 0.9, 0.9, 0.2],      # whole tumour
        ...               [0.1, 0.8, 0.8, 0.2],      # tumour core
        ...               [0.1, 0.1, 0.7, 0.6]])     # enhancing tumour
        >>> labels_from_regions(p, (2, 1, 3)).tolist()
        [2, 1, 3, 3]
    """
    probabilities = np.asarray(probabilities)
    if len(order) != probabilities.shape[0]:
        raise GeometryError(
            f"{probabilities.shape[0]} region channels but regions_class_order {list(order)} "
            "has another length"
        )
    labels = np.zeros(probabilities.shape[1:], np.uint8)
    for channel, value in enumerate(order):
        labels[probabilities[channel] > 0.5] = value
    return labels


def check_activation(
    channels: int, activation: str, output: str, region_order: Sequence[int] | None
) -> None:
    """Softmax needs K > 1, sigmoid K == 1 or regions; such labels need sigmoid probabilities."""
    if region_order is not None:
        if activation != "sigmoid" and (output == "labels" or activation == "softmax"):
            raise GeometryError(
                "region outputs are one sigmoid per region: use activation='sigmoid' (or leave "
                f"activation unset), got {activation!r}"
            )
        if len(region_order) != channels:
            raise GeometryError(
                f"{channels} output channels but {len(region_order)} regions; one per region"
            )
        return
    if activation == "softmax" and channels == 1:
        raise GeometryError(
            "softmax over a single output channel is always 1; use activation='sigmoid' "
            "(or leave activation unset) for a one-channel binary model"
        )
    if activation == "sigmoid" and channels != 1:
        raise GeometryError(
            f"sigmoid activation is for one-channel binary models or regions, got {channels} "
            "channels without region_order; use activation='softmax' (or leave it unset)"
        )
    if output == "labels" and channels == 1 and activation != "sigmoid":
        raise GeometryError(
            "labels of a one-channel model threshold sigmoid probabilities at 0.5; use "
            f"activation='sigmoid' with output='labels' (got {activation!r})"
        )
