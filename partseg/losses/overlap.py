"""Region (overlap) losses: Dice, Tversky, Focal-Tversky and weighted Dice.

All are computed per class from soft counts over valid voxels, per sample (then averaged over
the batch) or, with ``batch_dice=True``, over the whole batch as one volume (nnU-Net's "batch
Dice", more stable when a patch lacks a class). The background class is left out by default
(``include_background=False``); the per-class losses are averaged.

Example:
    >>> import torch
    >>> logits = torch.tensor([[[-9.0, 9.0]]])              # (B=1, K=1, X=2): p = (0, 1)
    >>> target = torch.tensor([[0, 1]])
    >>> round(TverskyLoss(alpha=0.5, beta=0.5)(logits, target).item(), 3)
    0.0
"""

from __future__ import annotations

from torch import Tensor, nn

from partseg.errors import ConfigError
from partseg.losses.base import (
    check_inputs,
    class_target,
    log_probs,
    one_hot,
    per_class_sum,
    select_classes,
    valid_weights,
)

__all__ = ["DiceLoss", "FocalTverskyLoss", "TverskyLoss", "WeightedDiceLoss"]


def _soft_counts(probs: Tensor, target: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Soft TP = sum(p g), FP = sum(p (1 - g)), FN = sum((1 - p) g) over valid voxels.

    Args:
        probs: (B, C, *S) probabilities.
        target: (B, C, *S) one-hot target.
        valid: (B, 1, *S) 0/1 weights.

    Returns:
        TP, FP, FN, each (B, C).
    """
    probs = probs * valid  # invalid voxels count nowhere
    tp = per_class_sum(probs * target)
    fp = per_class_sum(probs) - tp
    fn = per_class_sum(target * valid) - tp
    return tp, fp, fn


class _RegionLoss(nn.Module):
    """Base of the losses built on per-class sums over valid voxels."""

    def __init__(
        self,
        *,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1.0,
        sigmoid: bool = False,
    ) -> None:
        super().__init__()
        if smooth < 0:
            raise ConfigError(f"loss: smooth must be >= 0, got {smooth}")
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.smooth = float(smooth)
        self.sigmoid = sigmoid

    def _inputs(
        self, logits: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Checked fp32 probabilities (B, C, *S), one-hot target (B, C, *S), valid (B, 1, *S)."""
        check_inputs(logits, target, mask)
        log_p = log_probs(logits, self.sigmoid)  # (B, C, *S)
        n_classes = log_p.shape[1]
        encoded = one_hot(class_target(target, n_classes), n_classes)
        return log_p.exp(), encoded, valid_weights(target, mask).unsqueeze(1)

    def _reduce(self, sums: Tensor) -> Tensor:
        """(B, C) per-sample sums -> (B or 1, classes kept): batch sum, background dropped."""
        if self.batch_dice:
            sums = sums.sum(0, keepdim=True)
        return select_classes(sums, self.include_background)

    def counts(
        self, logits: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Soft (TP, FP, FN), each (B or 1, classes kept)."""
        tp, fp, fn = _soft_counts(*self._inputs(logits, target, mask))
        return self._reduce(tp), self._reduce(fp), self._reduce(fn)

    def soft_dice(self, logits: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        """Smoothed soft Dice per sample and class, (B or 1, classes kept)."""
        tp, fp, fn = self.counts(logits, target, mask)
        # |y^ ∩ y| = TP, |y^| = TP + FP, |y| = TP + FN
        return (2.0 * tp + self.smooth) / (2.0 * tp + fp + fn + self.smooth)


class DiceLoss(_RegionLoss):
    """Soft Dice loss with +1 smoothing, eq. 1 of Buchwald et al. (BraTS paper).

    ``Dice = 1 - (2|y^ ∩ y| + s) / (|y^| + |y| + s)`` per class with soft cardinalities
    (``s = smooth``, 1 in the paper), averaged over the classes kept and over the samples (or
    computed once over the batch with ``batch_dice``).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[-9.0, 9.0]]])          # (1, 1, 2): p = (0, 1) (binary)
        >>> target = torch.tensor([[0, 1]])
        >>> round(DiceLoss()(logits, target).item(), 3)      # 1 - (2 + 1) / (1 + 1 + 1)
        0.0
    """

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return 1.0 - self.soft_dice(logits, target, mask).mean()


class TverskyLoss(_RegionLoss):
    """Tversky loss (Salehi et al. 2017): ``1 - TI``, ``TI = TP / (TP + alpha FP + beta FN)``.

    ``alpha`` weighs false positives and ``beta`` false negatives; alpha = beta = 0.5 is the Dice
    loss. Defaults 0.3 / 0.7 are Salehi's best (recall-oriented). The counts are smoothed like the
    Dice loss: ``TI = (TP + s) / (TP + alpha FP + beta FN + s)``.
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        *,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1.0,
        sigmoid: bool = False,
    ) -> None:
        super().__init__(
            include_background=include_background,
            batch_dice=batch_dice,
            smooth=smooth,
            sigmoid=sigmoid,
        )
        if alpha < 0 or beta < 0:
            raise ConfigError(f"loss: Tversky alpha and beta must be >= 0, got {alpha}, {beta}")
        self.alpha, self.beta = float(alpha), float(beta)

    def tversky_index(self, logits: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        """Smoothed Tversky index per sample and kept class, (B or 1, classes)."""
        tp, fp, fn = self.counts(logits, target, mask)
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return (1.0 - self.tversky_index(logits, target, mask)).mean()


class FocalTverskyLoss(TverskyLoss):
    """Focal-Tversky loss (Abraham and Khan 2019): ``(1 - TI_c)^(1/gamma)``, mean over classes.

    The exponent is **1/gamma** with gamma in [1, 3], as in eq. 6-7 of the BraTS paper and the
    original ISBI paper; the authors' code uses the exponent 0.75, i.e. gamma = 4/3, which is
    the default here. Some reviews (Jadon 2020) print the exponent as gamma, the error the BraTS
    paper names as a possible cause of its failed training. gamma = 1 is the Tversky loss.
    What the exponent does, for a class with Tversky loss x = 1 - TI in [0, 1]: x^(1/gamma) >= x
    and its gradient x^(1/gamma - 1)/gamma grows as x -> 0, so classes that are already nearly
    right keep a sizeable gradient instead of fading out (Abraham and Khan's aim for small
    ROIs, which reach high TI late). The paper sums over classes; we average (the sum is the
    mean times the number of classes kept). ``1 - TI`` is clamped to 1e-6 so the gradient
    stays finite at a perfect prediction.
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 4.0 / 3.0,
        *,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1.0,
        sigmoid: bool = False,
    ) -> None:
        super().__init__(
            alpha,
            beta,
            include_background=include_background,
            batch_dice=batch_dice,
            smooth=smooth,
            sigmoid=sigmoid,
        )
        if gamma <= 0:
            raise ConfigError(f"loss: focal-Tversky gamma must be > 0 (paper: [1, 3]), got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        tl = (1.0 - self.tversky_index(logits, target, mask)).clamp_min(1e-6)
        return (tl ** (1.0 / self.gamma)).mean()


class WeightedDiceLoss(_RegionLoss):
    """Weighted Dice loss, eq. 1 of Chen et al. (aneurysm paper), implemented as printed.

    ``WDL = (1 - dsc)^beta * (-2 (GT·Pred + S/2) / (GT^2 + Pred^2 + S))`` per class, with the
    squared (V-Net) denominator and S = 1e-4. The second factor is minus a soft Dice, so the
    loss lies in [-1, 0]. ``dsc`` is the same soft Dice value **detached** (a weight, not a path
    for the gradient): without the stop-gradient, beta = 1 would give ``-(1 - d) d``, whose
    minimum is at d = 0.5, so training would push the Dice *down* once it passes 0.5. With it,
    the gradient is ``-(1 - dsc)^beta`` times the Dice gradient: poorly segmented classes get a
    larger step, as the paper intends. beta in [0, 1] (paper: 1 is best; 0 is the plain negative
    Dice). Note that the loss *value* is not monotone in the Dice (it is -(1 - d)^beta d), so
    watch the Dice, not this value, to judge training.
    """

    def __init__(
        self,
        beta: float = 1.0,
        *,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1e-4,
        sigmoid: bool = False,
    ) -> None:
        super().__init__(
            include_background=include_background,
            batch_dice=batch_dice,
            smooth=smooth,
            sigmoid=sigmoid,
        )
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"loss: weighted Dice beta must be in [0, 1] (eq. 1), got {beta}")
        self.beta = float(beta)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        probs, target_1h, valid = self._inputs(logits, target, mask)  # (B, C, *S), (B, 1, *S)
        inter = self._reduce(per_class_sum(probs * target_1h * valid))  # GT·Pred
        squares = self._reduce(
            per_class_sum((probs**2 + target_1h) * valid)
        )  # GT^2 + Pred^2 (GT^2 = GT)
        dice = 2.0 * (inter + self.smooth / 2.0) / (squares + self.smooth)
        weight = (1.0 - dice.detach()).clamp_min(0.0) ** self.beta
        return (-weight * dice).mean()
