"""Voxel-wise losses: cross-entropy, TopK cross-entropy and focal loss, over valid voxels.

Example:
    >>> import torch
    >>> logits = torch.zeros(1, 3, 2, 2)                      # (B, K, Y, X): p = 1/3 everywhere
    >>> target = torch.zeros(1, 2, 2, dtype=torch.long)
    >>> round(CrossEntropyLoss()(logits, target).item(), 4)   # log 3
    1.0986
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from partseg.errors import ConfigError
from partseg.losses.base import (
    check_inputs,
    class_target,
    log_probs,
    masked_mean,
    target_log_prob,
    valid_weights,
    zero_like,
)

__all__ = ["CrossEntropyLoss", "FocalLoss", "TopKLoss"]


def _class_weights(weight: Sequence[float] | None) -> Tensor | None:
    """Validated (C,) fp32 class weights, or None."""
    if weight is None:
        return None
    values = torch.as_tensor(list(weight), dtype=torch.float32)
    if values.ndim != 1 or bool((values < 0).any()):
        raise ConfigError(f"loss: class weights must be a list of non-negative numbers: {weight}")
    return values


def _voxel_log_pt(
    logits: Tensor, target: Tensor, mask: Tensor | None, sigmoid: bool
) -> tuple[Tensor, Tensor, int]:
    """Check the inputs; return log p of the target class (B, *S), the class ids and C."""
    check_inputs(logits, target, mask)
    log_p = log_probs(logits, sigmoid)  # (B, C, *S)
    ids = class_target(target, log_p.shape[1])
    return target_log_prob(log_p, ids), ids, log_p.shape[1]


class CrossEntropyLoss(nn.Module):
    """Cross-entropy averaged over valid voxels, optionally class-weighted.

    With ``weight`` the mean is weighted like :func:`torch.nn.functional.cross_entropy`:
    ``sum(w[y] * ce) / sum(w[y])``. In binary mode (one channel) this is the binary
    cross-entropy on the sigmoid, and ``weight`` has two entries (background, foreground).

    Example:
        >>> import torch
        >>> CrossEntropyLoss()(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
        tensor(0.6931)
    """

    def __init__(self, weight: Sequence[float] | None = None, sigmoid: bool = False) -> None:
        super().__init__()
        self.sigmoid = sigmoid
        self.register_buffer("weight", _class_weights(weight), persistent=False)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        log_pt, ids, n_classes = _voxel_log_pt(logits, target, mask, self.sigmoid)
        ce = -log_pt  # (B, *S)
        valid = valid_weights(target, mask)
        if self.weight is not None:
            if self.weight.numel() != n_classes:
                raise ConfigError(
                    f"loss: {self.weight.numel()} class weights for "
                    f"{logits.shape[1]} logit channels"
                )
            valid = valid * self.weight.to(ce.device)[ids]
        return masked_mean(ce, valid, logits)


class TopKLoss(nn.Module):
    """Cross-entropy over the ``k`` percent hardest valid voxels of the batch (Wu 2016).

    nnU-Net's TopK loss used in the ADAM-winning Dice + TopK ensemble (Ma 2020): the voxel-wise
    cross-entropy of all valid voxels of the batch is sorted and the largest ``ceil(k/100 * n)``
    values are averaged.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[0.0, 0.0, 5.0, -5.0]]])   # (B=1, K=1, X=4), binary
        >>> target = torch.tensor([[1, 0, 1, 1]])
        >>> round(TopKLoss(k=25)(logits, target).item(), 4)       # only the worst voxel: -log s(-5)
        5.0067
    """

    def __init__(self, k: float = 10.0, sigmoid: bool = False) -> None:
        super().__init__()
        if not 0 < k <= 100:
            raise ConfigError(f"loss: TopK k is a percentage in (0, 100], got {k}")
        self.k = float(k)
        self.sigmoid = sigmoid

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        log_pt, _, _ = _voxel_log_pt(logits, target, mask, self.sigmoid)
        ce = -log_pt  # (B, *S)
        values = ce[mask.bool()] if mask is not None else ce.reshape(-1)  # (N,)
        if values.numel() == 0:
            return zero_like(logits)
        n = min(values.numel(), max(1, math.ceil(values.numel() * self.k / 100.0)))
        return values.topk(n, sorted=False).values.mean()


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log(p_t)``, mean over valid voxels.

    ``alpha`` is None (no weighting), a float (weight ``alpha`` for every foreground class and
    ``1 - alpha`` for the background, as Lin's binary alpha), or one weight per class.
    ``gamma = 0`` and no alpha give the cross-entropy.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 1, 1)                     # p_t = 0.5 everywhere
        >>> target = torch.zeros(1, 1, 1, dtype=torch.long)
        >>> round(FocalLoss(gamma=2)(logits, target).item(), 4)   # 0.25 * log 2
        0.1733
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        sigmoid: bool = False,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"loss: focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = alpha if alpha is None or isinstance(alpha, float | int) else list(alpha)
        self.sigmoid = sigmoid

    def _alpha(self, n_classes: int, device: torch.device) -> Tensor | None:
        """(C,) per-class alpha weights, or None."""
        if self.alpha is None:
            return None
        if isinstance(self.alpha, list):
            if len(self.alpha) != n_classes:
                raise ConfigError(f"loss: {len(self.alpha)} focal alphas for {n_classes} classes")
            return torch.tensor(self.alpha, dtype=torch.float32, device=device)
        values = torch.full((n_classes,), float(self.alpha), device=device)
        values[0] = 1.0 - float(self.alpha)
        return values

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        log_pt, ids, n_classes = _voxel_log_pt(logits, target, mask, self.sigmoid)  # (B, *S)
        loss = -((1.0 - log_pt.exp()).clamp_min(0.0) ** self.gamma) * log_pt
        alpha = self._alpha(n_classes, loss.device)
        if alpha is not None:
            loss = loss * alpha[ids]
        return masked_mean(loss, valid_weights(target, mask), logits)
