"""Segmentation losses, computed in fp32 and restricted to valid voxels.

Every loss has the signature ``loss(logits, target, mask=None) -> Tensor`` (a 0-d fp32 tensor):

* ``logits`` (B, K, *spatial), any float dtype; cast to fp32 inside, so losses are computed in
  fp32 even under autocast.
* ``target`` (B, *spatial) int64 class ids in ``[0, K)``.
* ``mask`` (B, *spatial) bool, True on valid voxels. Voxels outside the volume (the zero-padded
  part of a minicube) and the context margin are False and are left out of *every* term: they add
  nothing to a cross-entropy mean and nothing to a Dice intersection or cardinality.

**Softmax or sigmoid.** With K > 1 channels the class probabilities come from a softmax. With
K == 1 (or ``sigmoid=True``, which then requires K == 1) the single channel is the foreground
logit of a binary task; the foreground is ``target > 0``. Internally both cases become a
(B, C, *spatial) tensor of log-probabilities with C == K for softmax and C == 2
(background, foreground) for sigmoid, so every loss below is written once.

**Region losses** (Dice, Tversky, Focal-Tversky, weighted Dice) are computed per class from the
soft counts TP = sum(p g), FP = sum(p (1 - g)), FN = sum((1 - p) g) over valid voxels, per sample
(and averaged over the batch) or, with ``batch_dice=True``, over the whole batch as one volume
(nnU-Net's "batch Dice", more stable when a patch lacks a class). The background class is left
out by default (``include_background=False``); the per-class losses are averaged.

Example:
    >>> import torch
    >>> loss = build_loss("dice_ce")
    >>> logits = torch.zeros(2, 3, 4, 4, 4, requires_grad=True)     # (B, K, Z, Y, X)
    >>> target = torch.randint(0, 3, (2, 4, 4, 4))                   # (B, Z, Y, X)
    >>> value = loss(logits, target)
    >>> value.backward()
    >>> value.dtype
    torch.float32
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partseg.errors import ConfigError

__all__ = [
    "LOSSES",
    "AdaptiveTverskyCELoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceLoss",
    "DiceTopKLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "LossConfig",
    "TopKLoss",
    "TverskyLoss",
    "WeightedDiceLoss",
    "build_loss",
]


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _check_inputs(logits: Tensor, target: Tensor, mask: Tensor | None) -> None:
    """Raise ConfigError when logits, target and mask shapes do not fit together."""
    if logits.ndim < 3:
        raise ConfigError(
            "loss: logits must be (B, K, *spatial) with 1-3 spatial axes, "
            f"got {tuple(logits.shape)}"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ConfigError(
            f"loss: target shape {tuple(target.shape)} does not fit logits "
            f"{tuple(logits.shape)}; expected {expected}"
        )
    if mask is not None and tuple(mask.shape) != expected:
        raise ConfigError(
            f"loss: mask shape {tuple(mask.shape)} does not fit logits "
            f"{tuple(logits.shape)}; expected {expected}"
        )


def _use_sigmoid(logits: Tensor, sigmoid: bool) -> bool:
    """Return True for the binary (one foreground channel) mode."""
    if sigmoid and logits.shape[1] != 1:
        raise ConfigError(
            f"loss: sigmoid=True needs one foreground channel, got {logits.shape[1]} channels; "
            "use sigmoid=False for a softmax over the channels"
        )
    return sigmoid or logits.shape[1] == 1


def _log_probs(logits: Tensor, sigmoid: bool) -> Tensor:
    """fp32 log-probabilities (B, C, *S): log-softmax, or (log(1-p), log p) for one channel."""
    logits = logits.float()
    if _use_sigmoid(logits, sigmoid):
        return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=1)
    return F.log_softmax(logits, dim=1)


def _class_target(target: Tensor, n_classes: int) -> Tensor:
    """Target as class ids in [0, C): foreground = target > 0 in binary mode."""
    target = target.long()
    return (target > 0).long() if n_classes == 2 else target


def _one_hot(target: Tensor, n_classes: int) -> Tensor:
    """(B, *S) ids -> (B, C, *S) fp32 one-hot."""
    one_hot = F.one_hot(target, n_classes)  # (B, *S, C)
    return one_hot.movedim(-1, 1).float()


def _valid(target: Tensor, mask: Tensor | None) -> Tensor:
    """(B, *S) fp32 weights: 1 on valid voxels, 0 elsewhere."""
    if mask is None:
        return torch.ones(target.shape, dtype=torch.float32, device=target.device)
    return mask.to(dtype=torch.float32, device=target.device)


def _zero_like(logits: Tensor) -> Tensor:
    """A 0 loss connected to the graph (no valid voxel in the batch)."""
    return logits.float().sum() * 0.0


def _soft_counts(
    probs: Tensor, one_hot: Tensor, valid: Tensor, batch: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft TP, FP, FN per class over valid voxels.

    Args:
        probs: (B, C, *S) probabilities.
        one_hot: (B, C, *S) one-hot target.
        valid: (B, *S) 0/1 weights.
        batch: sum over the batch too (shape (1, C)) instead of per sample (shape (B, C)).
    """
    valid = valid.unsqueeze(1)  # (B, 1, *S)
    axes = tuple(range(2, probs.ndim))
    probs = probs * valid  # invalid voxels count nowhere
    tp = (probs * one_hot).sum(axes)  # (B, C)
    fp = probs.sum(axes) - tp  # sum p (1 - g)
    fn = (one_hot * valid).sum(axes) - tp  # sum (1 - p) g
    if batch:
        tp, fp, fn = (t.sum(0, keepdim=True) for t in (tp, fp, fn))
    return tp, fp, fn


def _select_classes(values: Tensor, include_background: bool) -> Tensor:
    """Drop channel 0 (background) from a (B, C) tensor unless asked to keep it."""
    return values if include_background else values[:, 1:]


class _RegionLoss(nn.Module):
    """Base of the losses built on per-class soft TP / FP / FN."""

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

    def counts(
        self, logits: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Soft (TP, FP, FN), each (B or 1, classes kept)."""
        _check_inputs(logits, target, mask)
        log_p = _log_probs(logits, self.sigmoid)  # (B, C, *S)
        n_classes = log_p.shape[1]
        one_hot = _one_hot(_class_target(target, n_classes), n_classes)
        counts = _soft_counts(log_p.exp(), one_hot, _valid(target, mask), self.batch_dice)
        return tuple(_select_classes(c, self.include_background) for c in counts)  # type: ignore[return-value]

    def soft_dice(self, logits: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        """Smoothed soft Dice per sample and class, (B or 1, classes kept)."""
        tp, fp, fn = self.counts(logits, target, mask)
        # |y^ ∩ y| = TP, |y^| = TP + FP, |y| = TP + FN
        return (2.0 * tp + self.smooth) / (2.0 * tp + fp + fn + self.smooth)


# --------------------------------------------------------------------------------------------
# Voxel-wise losses
# --------------------------------------------------------------------------------------------


def _class_weights(weight: Sequence[float] | None) -> Tensor | None:
    if weight is None:
        return None
    values = torch.as_tensor(list(weight), dtype=torch.float32)
    if values.ndim != 1 or bool((values < 0).any()):
        raise ConfigError(f"loss: class weights must be a list of non-negative numbers: {weight}")
    return values


def _voxel_ce(logits: Tensor, target: Tensor, sigmoid: bool) -> tuple[Tensor, Tensor]:
    """Per-voxel cross-entropy (B, *S) and the class-id target used for it."""
    log_p = _log_probs(logits, sigmoid)
    ids = _class_target(target, log_p.shape[1])
    return -log_p.gather(1, ids.unsqueeze(1)).squeeze(1), ids


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
        _check_inputs(logits, target, mask)
        ce, ids = _voxel_ce(logits, target, self.sigmoid)  # (B, *S)
        valid = _valid(target, mask)
        if self.weight is not None:
            n_classes = 2 if _use_sigmoid(logits, self.sigmoid) else logits.shape[1]
            if self.weight.numel() != n_classes:
                raise ConfigError(
                    f"loss: {self.weight.numel()} class weights for "
                    f"{logits.shape[1]} logit channels"
                )
            valid = valid * self.weight.to(ce.device)[ids]
        total = valid.sum()
        if total <= 0:
            return _zero_like(logits)
        return (ce * valid).sum() / total


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
        _check_inputs(logits, target, mask)
        ce, _ = _voxel_ce(logits, target, self.sigmoid)
        values = ce[mask.bool()] if mask is not None else ce.reshape(-1)  # (N,)
        if values.numel() == 0:
            return _zero_like(logits)
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
        _check_inputs(logits, target, mask)
        log_p = _log_probs(logits, self.sigmoid)  # (B, C, *S)
        ids = _class_target(target, log_p.shape[1])
        log_pt = log_p.gather(1, ids.unsqueeze(1)).squeeze(1)  # (B, *S)
        loss = -((1.0 - log_pt.exp()).clamp_min(0.0) ** self.gamma) * log_pt
        alpha = self._alpha(log_p.shape[1], loss.device)
        if alpha is not None:
            loss = loss * alpha[ids]
        valid = _valid(target, mask)
        total = valid.sum()
        if total <= 0:
            return _zero_like(logits)
        return (loss * valid).sum() / total


# --------------------------------------------------------------------------------------------
# Region losses
# --------------------------------------------------------------------------------------------


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
        _check_inputs(logits, target, mask)
        log_p = _log_probs(logits, self.sigmoid)
        n_classes = log_p.shape[1]
        probs = log_p.exp()  # (B, C, *S)
        one_hot = _one_hot(_class_target(target, n_classes), n_classes)
        valid = _valid(target, mask).unsqueeze(1)
        axes = tuple(range(2, probs.ndim))
        inter = (probs * one_hot * valid).sum(axes)  # (B, C)  GT·Pred
        squares = ((probs**2 + one_hot) * valid).sum(axes)  # GT^2 + Pred^2 (GT^2 = GT)
        if self.batch_dice:
            inter, squares = inter.sum(0, keepdim=True), squares.sum(0, keepdim=True)
        inter = _select_classes(inter, self.include_background)
        squares = _select_classes(squares, self.include_background)
        dice = 2.0 * (inter + self.smooth / 2.0) / (squares + self.smooth)
        weight = (1.0 - dice.detach()).clamp_min(0.0) ** self.beta
        return (-weight * dice).mean()


# --------------------------------------------------------------------------------------------
# Compound losses
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Deep supervision
# --------------------------------------------------------------------------------------------


def _nearest_resize(labels: Tensor, size: Sequence[int]) -> Tensor:
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
    output's spatial size by nearest-neighbour striding (:func:`_nearest_resize`). Default
    weights halve per level (1, 1/2, 1/4, ...) and are normalised to sum to 1; given weights are
    normalised too. A single tensor is passed to ``loss`` unchanged.

    Example:
        >>> import torch
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
            level_target = _nearest_resize(target, size)
            level_mask = None if mask is None else _nearest_resize(mask, size)
            term = weight * self.loss(output, level_target, level_mask)
            total = term if total is None else total + term
        assert total is not None  # level_weights guarantees one positive weight
        return total

    def end_epoch(self) -> dict[str, float] | None:
        """Forward :meth:`AdaptiveTverskyCELoss.end_epoch` (or any inner ``end_epoch``)."""
        inner = getattr(self.loss, "end_epoch", None)
        return inner() if callable(inner) else None


# --------------------------------------------------------------------------------------------
# Factory and config
# --------------------------------------------------------------------------------------------

#: Loss names accepted by :func:`build_loss` and :class:`LossConfig`.
LOSSES: Mapping[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "dice": DiceLoss,
    "dice_ce": DiceCELoss,
    "dice_topk": DiceTopKLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
    "focal": FocalLoss,
    "weighted_dice": WeightedDiceLoss,
    "adaptive_tversky_ce": AdaptiveTverskyCELoss,
}


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.0)
    return f"did you mean {close[0]!r}? " if close else ""


def _check_loss(name: str, params: Mapping[str, Any]) -> type[nn.Module]:
    """Return the loss class of ``name`` after checking ``params`` against its signature."""
    if name not in LOSSES:
        raise ConfigError(
            f"unknown loss {name!r}; {_suggest(name, list(LOSSES))}"
            f"valid losses: {', '.join(LOSSES)}"
        )
    cls = LOSSES[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in params:
        if key not in valid:
            raise ConfigError(
                f"loss {name!r} has no parameter {key!r}; {_suggest(key, valid)}"
                f"valid parameters: {', '.join(valid)}"
            )
    return cls


def build_loss(name: str, **params: Any) -> nn.Module:
    """Build a loss by name with keyword parameters.

    Args:
        name: one of :data:`LOSSES` (``"ce"``, ``"dice"``, ``"dice_ce"``, ``"dice_topk"``,
            ``"tversky"``, ``"focal_tversky"``, ``"focal"``, ``"weighted_dice"``,
            ``"adaptive_tversky_ce"``).
        **params: constructor arguments of that loss.

    Raises:
        ConfigError: unknown name or parameter (the message names the nearest valid one).

    Example:
        >>> build_loss("tversky", alpha=0.7, beta=0.3).beta
        0.3
    """
    cls = _check_loss(name, params)
    try:
        return cls(**params)
    except TypeError as err:  # e.g. a list where a number is expected
        raise ConfigError(f"loss {name!r}: bad parameters {dict(params)}: {err}") from err


@dataclass(frozen=True)
class LossConfig:
    """The ``loss`` section of a training config: a loss name and its parameters.

    The name and parameter names are checked on construction. ``params`` is copied into a plain
    dict so the config stays YAML/``dataclasses.asdict`` friendly.

    Example:
        >>> LossConfig("focal_tversky", {"gamma": 1.5}).build().gamma
        1.5
    """

    name: str = "dice_ce"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))
        _check_loss(self.name, self.params)

    def build(self) -> nn.Module:
        """Instantiate the loss."""
        return build_loss(self.name, **self.params)
