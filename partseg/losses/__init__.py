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
(background, foreground) for sigmoid, so every loss is written once.

**Modules.** ``base`` (shared helpers: input checks, fp32 probabilities, one-hot, masked
reductions), ``overlap`` (Dice, Tversky, Focal-Tversky, weighted Dice: per-class soft counts,
optionally over the whole batch), ``voxelwise`` (cross-entropy, TopK, focal), ``compound``
(Dice + CE, Dice + TopK, adaptive TverskyCE), ``deep_supervision``, ``regions`` (any loss on
region outputs, one sigmoid per region: nnU-Net's region-based BraTS training) and ``registry``
(:data:`LOSSES`, :func:`build_loss`, :class:`LossConfig`; torch-free). Import the public names
from ``partseg.losses``; the loss classes are imported on first use.

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

from partseg.lazy import lazy_getattr
from partseg.losses.registry import LOSSES, LossConfig, build_loss, loss_parameters

# The loss classes need torch; they are imported on first access, so that ``LossConfig`` and the
# loss names can be validated (e.g. by ``partseg.config.load_config``) without torch.
_LAZY = {
    "AdaptiveTverskyCELoss": "compound",
    "DiceCELoss": "compound",
    "DiceTopKLoss": "compound",
    "DeepSupervisionLoss": "deep_supervision",
    "DiceLoss": "overlap",
    "FocalTverskyLoss": "overlap",
    "TverskyLoss": "overlap",
    "WeightedDiceLoss": "overlap",
    "CrossEntropyLoss": "voxelwise",
    "FocalLoss": "voxelwise",
    "TopKLoss": "voxelwise",
    "RegionLoss": "regions",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


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
    "RegionLoss",
    "TopKLoss",
    "TverskyLoss",
    "WeightedDiceLoss",
    "build_loss",
    "loss_parameters",
]
