"""Ensembles: average the probabilities of several checkpoints (folds, loss variants).

Members that share the input layout, channels and classes run together, minicube by minicube:
:class:`EnsembleModel` returns ``log(mean_i softmax(model_i(x)))``, so the stitcher's softmax
gives back exactly the averaged probabilities and no per-model volume is ever held in RAM.
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
    """Average the softmax of several models; outputs log-probabilities as "logits".

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

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        if not members:
            raise CheckpointError("an ensemble needs at least one model")
        self.members = torch.nn.ModuleList(members)
        first = members[0]
        self.out_channels = int(first.out_channels)
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
            probabilities = out.float().softmax(dim=1)
            total = probabilities if total is None else total + probabilities
        assert total is not None
        return torch.log((total / len(self.members)).clamp_min(1e-12))


def check_members(loaded: Sequence[Any]) -> None:
    """Raise CheckpointError unless every member has the same layout, channels and classes."""
    first = loaded[0]
    for other in loaded[1:]:
        for name in ("layout", "channels", "classes"):
            if getattr(other, name) != getattr(first, name):
                raise CheckpointError(
                    f"ensemble members disagree on {name}: {first.path} has "
                    f"{getattr(first, name)}, {other.path} has {getattr(other, name)}; "
                    "ensemble checkpoints trained on the same store and layout"
                )


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
