"""Ensembles: average the probabilities of several checkpoints (folds, loss variants).

Members that share the input layout, channels and classes run together, minicube by minicube:
:class:`EnsembleModel` returns ``log(mean_i softmax(model_i(x)))``, so the stitcher's softmax
gives back exactly the averaged probabilities and no per-model volume is ever held in RAM. For
one-channel (sigmoid) members, and region members (one sigmoid per region), it returns
``logit(mean_i sigmoid(model_i(x)))``, so the stitcher's sigmoid gives back the averaged
probabilities (thresholded at 0.5 for labels).
The shared partition (:func:`ensemble_partition`) keeps the first member's core and takes the
widest margins and the largest stride of all members. Members with different layouts cannot
share minicubes: predict each separately and use :func:`average_probabilities`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from partseg.errors import CheckpointError
from partseg.geometry import Partition, make_partition


class EnsembleModel(torch.nn.Module):
    """Average the probabilities of several models; outputs "logits" of the average.

    K > 1 channels: ``log(mean softmax)`` (softmax of it is the mean). One channel, or
    ``sigmoid=True`` (region members): ``logit(mean sigmoid)`` per channel (sigmoid of it is
    the mean). The mean is clamped to ``[1e-12, 1 - 1e-12]`` (sigmoid) or ``>= 1e-12`` so no
    logit is infinite; all members must have the same number of output channels.

    Example:
        >>> a, b = torch.nn.Conv3d(1, 2, 1), torch.nn.Conv3d(1, 2, 1)
        >>> for m in (a, b):
        ...     m.out_channels = 2
        >>> ens = EnsembleModel([a, b]).eval()
        >>> x = torch.randn(1, 1, 2, 2, 2)
        >>> p = (a(x).softmax(1) + b(x).softmax(1)) / 2
        >>> bool(torch.allclose(ens(x).softmax(1), p, atol=1e-6))
        True
    """

    def __init__(self, members: Sequence[torch.nn.Module], *, sigmoid: bool = False) -> None:
        super().__init__()
        if not members:
            raise CheckpointError("an ensemble needs at least one model")
        self.members = torch.nn.ModuleList(members)
        first = members[0]
        self.out_channels = int(first.out_channels)
        self.sigmoid = sigmoid or self.out_channels == 1
        counts = [int(m.out_channels) for m in members]
        if len(set(counts)) > 1:
            raise CheckpointError(
                f"ensemble members have different output channels {counts}; a one-channel "
                "(sigmoid) model cannot be averaged with softmax models: ensemble models with "
                "the same model.out_channels"
            )
        self.in_channels = getattr(first, "in_channels", None)
        self.spatial_dims = getattr(first, "spatial_dims", None)
        self.total_stride = math.lcm(*(int(getattr(m, "total_stride", 1)) for m in members))
        self.receptive_field = max(int(getattr(m, "receptive_field", 1)) for m in members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for member in self.members:
            out = member(x)
            if isinstance(out, list | tuple):
                out = out[0]
            out = out.float()  # (B, K, *S)
            probabilities = out.sigmoid() if self.sigmoid else out.softmax(dim=1)
            total = probabilities if total is None else total + probabilities
        assert total is not None
        mean = total / len(self.members)
        if self.sigmoid:
            mean = mean.clamp(1e-12, 1.0 - 1e-12)
            return torch.log(mean) - torch.log1p(-mean)  # logit: sigmoid(logit(p)) == p
        return torch.log(mean.clamp_min(1e-12))


def check_members(loaded: Sequence[Any]) -> None:
    """Raise CheckpointError unless all members share layout, channels, classes and inputs.

    An ensemble feeds every member the same minicubes, so they must agree on the input layout,
    the store's channels (the same modalities in the same order; BraTS 2020 and 2023 names
    match by alias, :mod:`partseg.store.editions`), classes, regions and the derived channels;
    every disagreement is listed.
    """
    from partseg.store.editions import same_channels

    first = loaded[0]
    problems = [
        f"{other.path} has {name} {getattr(other, name)} but {first.path} has "
        f"{getattr(first, name)}"
        for other in loaded[1:]
        for name in ("layout", "channels", "classes", "regions", "derived_channels")
        if (
            not same_channels(other.channels, first.channels)
            if name == "channels"
            else _as_tuple(getattr(other, name, None)) != _as_tuple(getattr(first, name, None))
        )
    ]
    if problems:
        raise CheckpointError(
            "ensemble members disagree: " + "; ".join(problems) + "; ensemble checkpoints "
            "trained on the same store, layout and data.derived_channels"
        )


def _as_tuple(value: Any) -> Any:
    """Lists and tuples compare alike (a checkpoint may hold either)."""
    return tuple(value) if isinstance(value, list | tuple) else value


def ensemble_partition(partitions: Sequence[Partition]) -> Partition:
    """One partition all members can run on: first core, widest margins, largest stride."""
    first = partitions[0]
    stride = tuple(math.lcm(*(p.stride[a] for p in partitions)) for a in range(first.ndim))
    margins = [
        (max(p.margin_before[a] for p in partitions), max(p.margin_after[a] for p in partitions))
        for a in range(first.ndim)
    ]
    return make_partition(first.core, margins, stride, ndim=first.ndim)


def average_probabilities(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of several (K, Z, Y, X) probability volumes, float32.

    Example:
        >>> average_probabilities([np.ones((2, 1)), np.zeros((2, 1))]).tolist()
        [[0.5], [0.5]]
    """
    if not probabilities:
        raise CheckpointError("nothing to average: no predictions")
    total = np.zeros(probabilities[0].shape, np.float32)
    for p in probabilities:
        if p.shape != total.shape:
            raise CheckpointError(
                f"cannot average predictions of shapes {total.shape} and {p.shape}"
            )
        total += p
    return total / len(probabilities)
