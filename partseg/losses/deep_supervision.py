"""Deep supervision: one loss over every output of a deep-supervised network (nnU-Net style)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from partseg.errors import ConfigError

__all__ = ["DeepSupervisionLoss", "nearest_resize"]


def nearest_resize(labels: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of (B, *S) integer/bool labels to (B, *size), no floats.

    Output voxel i along an axis of length n -> m takes input voxel ``floor(i * n / m)``, the
    rule of ``F.interpolate(mode="nearest")``; for n = 2m this is striding ``[::2]`` (the first
    voxel of each 2-window, no max pooling, so a thin structure may vanish at coarse levels).
    """
    for axis, m in enumerate(size, start=1):
        n = labels.shape[axis]
        if n != m:
            index = torch.arange(m, device=labels.device) * n // m
            labels = labels.index_select(axis, index)
    return labels


class DeepSupervisionLoss(nn.Module):
    """Apply ``loss`` to every output of a deep-supervised network (nnU-Net style).

    ``logits`` is a list ``[full, half, quarter, ...]``; target and mask are resized to each
    output's spatial size by nearest-neighbour striding (:func:`nearest_resize`). Default
    weights halve per level (1, 1/2, 1/4, ...) and are normalised to sum to 1; given weights are
    normalised too. A single tensor is passed to ``loss`` unchanged.

    Example:
        >>> import torch
        >>> from partseg.losses import DiceLoss
        >>> ds = DeepSupervisionLoss(DiceLoss())
        >>> outs = [torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 4, 4)]
        >>> value = ds(outs, torch.ones(1, 8, 8, dtype=torch.long))
        >>> ds.level_weights(2)
        [0.6666666666666666, 0.3333333333333333]
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]
        if self.weights is not None and (
            any(w < 0 for w in self.weights) or sum(self.weights) <= 0
        ):
            raise ConfigError(f"deep supervision weights must be >= 0, not all 0: {weights}")

    def level_weights(self, n_levels: int) -> list[float]:
        """Normalised weights of ``n_levels`` outputs."""
        raw = self.weights if self.weights is not None else [0.5**i for i in range(n_levels)]
        if len(raw) != n_levels:
            raise ConfigError(
                f"deep supervision: {len(raw)} weights for {n_levels} network outputs"
            )
        total = sum(raw)
        return [w / total for w in raw]

    def forward(
        self, logits: Tensor | Sequence[Tensor], target: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        if isinstance(logits, Tensor):
            return self.loss(logits, target, mask)
        outputs = list(logits)
        total: Tensor | None = None
        for weight, output in zip(self.level_weights(len(outputs)), outputs, strict=True):
            if weight == 0.0:
                continue
            size = output.shape[2:]
            level_target = nearest_resize(target, size)
            level_mask = None if mask is None else nearest_resize(mask, size)
            term = weight * self.loss(output, level_target, level_mask)
            total = term if total is None else total + term
        assert total is not None  # level_weights guarantees one positive weight
        return total

    def end_epoch(self) -> dict[str, float] | None:
        """Forward :meth:`AdaptiveTverskyCELoss.end_epoch` (or any inner ``end_epoch``)."""
        inner = getattr(self.loss, "end_epoch", None)
        return inner() if callable(inner) else None
