"""Compound losses: Dice + CE, Dice + TopK (Ma 2020) and the adaptive TverskyCE (Zhang et al.).

Example:
    >>> import torch
    >>> loss = DiceCELoss(weight_dice=1.0, weight_ce=0.0)
    >>> round(loss(torch.tensor([[[-9.0, 9.0]]]), torch.tensor([[0, 1]])).item(), 3)   # Dice only
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from partseg.losses.overlap import DiceLoss, TverskyLoss
from partseg.losses.voxelwise import CrossEntropyLoss, TopKLoss

__all__ = ["AdaptiveTverskyCELoss", "DiceCELoss", "DiceTopKLoss"]


class DiceCELoss(nn.Module):
    """``weight_dice * Dice + weight_ce * CE`` (nnU-Net's default; Ma 2020)."""

    def __init__(
        self,
        weight_dice: float = 1.0,
        weight_ce: float = 1.0,
        *,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1.0,
        class_weight: Sequence[float] | None = None,
        sigmoid: bool = False,
    ) -> None:
        super().__init__()
        self.weight_dice, self.weight_ce = float(weight_dice), float(weight_ce)
        self.dice = DiceLoss(
            include_background=include_background,
            batch_dice=batch_dice,
            smooth=smooth,
            sigmoid=sigmoid,
        )
        self.ce = CrossEntropyLoss(weight=class_weight, sigmoid=sigmoid)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.weight_dice * self.dice(logits, target, mask) + self.weight_ce * self.ce(
            logits, target, mask
        )


class DiceTopKLoss(nn.Module):
    """``weight_dice * Dice + weight_topk * TopK(k%)``: the ADAM 2020 winner's second loss."""

    def __init__(
        self,
        k: float = 10.0,
        weight_dice: float = 1.0,
        weight_topk: float = 1.0,
        *,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1.0,
        sigmoid: bool = False,
    ) -> None:
        super().__init__()
        self.weight_dice, self.weight_topk = float(weight_dice), float(weight_topk)
        self.dice = DiceLoss(
            include_background=include_background,
            batch_dice=batch_dice,
            smooth=smooth,
            sigmoid=sigmoid,
        )
        self.topk = TopKLoss(k=k, sigmoid=sigmoid)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.weight_dice * self.dice(logits, target, mask) + self.weight_topk * self.topk(
            logits, target, mask
        )


class AdaptiveTverskyCELoss(nn.Module):
    """Adaptive TverskyCE (Zhang et al., pancreas paper, eq. 8-11).

    ``L(t) = w_T(t) L_Tversky + w_CE(t) L_CE`` with the epoch-t weights taken from the loss
    proportions of epoch t - 1::

        w_T(t) = L_T(t-1) / (L_T(t-1) + L_CE(t-1)),   w_CE(t) = 1 - w_T(t)        (9-11)

    where ``L(t-1)`` is the mean of the (unweighted) term over the training batches of the
    previous epoch. The weights start at 0.5 / 0.5. During training (``module.training`` and
    grad enabled) every call adds the detached term values to running sums; :meth:`end_epoch`
    turns them into the new weights and resets the sums. Weights, sums and the batch count are
    buffers, so they are saved in ``state_dict`` with every checkpoint and restored on resume.
    Under DDP each rank sees its own batches; all-reduce ``sums`` and ``count`` before
    ``end_epoch`` to keep the ranks identical. Wrapped in :class:`DeepSupervisionLoss`, the sums
    also collect the lower-resolution outputs (each call counts once).

    Example:
        >>> import torch
        >>> loss = AdaptiveTverskyCELoss(alpha=0.5, beta=0.5)
        >>> _ = loss(torch.zeros(1, 2, 4, 4), torch.ones(1, 4, 4, dtype=torch.long))
        >>> loss.end_epoch()["tversky"] > 0.0
        True
    """

    weights: Tensor
    sums: Tensor
    count: Tensor

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        *,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1.0,
        class_weight: Sequence[float] | None = None,
        sigmoid: bool = False,
    ) -> None:
        super().__init__()
        self.tversky = TverskyLoss(
            alpha,
            beta,
            include_background=include_background,
            batch_dice=batch_dice,
            smooth=smooth,
            sigmoid=sigmoid,
        )
        self.ce = CrossEntropyLoss(weight=class_weight, sigmoid=sigmoid)
        self.register_buffer("weights", torch.tensor([0.5, 0.5], dtype=torch.float64))
        self.register_buffer("sums", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        l_tversky = self.tversky(logits, target, mask)
        l_ce = self.ce(logits, target, mask)
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                terms = torch.stack([l_tversky.detach(), l_ce.detach()]).to(self.sums)
                self.sums += terms
                self.count += 1
        w = self.weights.to(torch.float32)
        return w[0] * l_tversky + w[1] * l_ce

    @torch.no_grad()
    def end_epoch(self) -> dict[str, float]:
        """Set the weights from this epoch's mean term values (eq. 9-10); reset the sums.

        Returns:
            ``{"tversky": w_T, "ce": w_CE}`` for the next epoch. With no batch seen (or both
            terms 0) the weights are kept.
        """
        total = float(self.sums.sum())
        if int(self.count) > 0 and total > 0.0:
            self.weights.copy_(self.sums / total)  # means share the divisor: sums suffice
        self.sums.zero_()
        self.count.zero_()
        return {"tversky": float(self.weights[0]), "ce": float(self.weights[1])}
