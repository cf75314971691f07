"""Shared helpers of the losses: input checks, fp32 probabilities, one-hot, masking, reductions.

Every loss works on (B, C, *S) fp32 log-probabilities (C == K for a softmax, C == 2
(background, foreground) for the sigmoid of one logit channel), a (B, *S) class-id target in
[0, C) and (B, *S) fp32 0/1 weights that are 1 on valid voxels. Invalid voxels are removed by
multiplying with the weights before any sum, so they count in no term.

Example:
    >>> import torch
    >>> logits = torch.zeros(1, 1, 3)                        # (B, K=1, X): binary, p = 0.5
    >>> log_probs(logits, sigmoid=False).exp()               # (B, C=2, X)
    tensor([[[0.5000, 0.5000, 0.5000],
             [0.5000, 0.5000, 0.5000]]])
    >>> masked_mean(torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[1.0, 1.0, 0.0]]), logits)
    tensor(1.5000)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from partseg.errors import ConfigError

__all__ = [
    "check_inputs",
    "class_target",
    "log_probs",
    "masked_mean",
    "one_hot",
    "per_class_sum",
    "select_classes",
    "target_log_prob",
    "use_sigmoid",
    "valid_weights",
    "zero_like",
]


def check_inputs(logits: Tensor, target: Tensor, mask: Tensor | None) -> None:
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


def use_sigmoid(logits: Tensor, sigmoid: bool) -> bool:
    """Return True for the binary (one foreground channel) mode."""
    if sigmoid and logits.shape[1] != 1:
        raise ConfigError(
            f"loss: sigmoid=True needs one foreground channel, got {logits.shape[1]} channels; "
            "use sigmoid=False for a softmax over the channels"
        )
    return sigmoid or logits.shape[1] == 1


def log_probs(logits: Tensor, sigmoid: bool) -> Tensor:
    """fp32 log-probabilities (B, C, *S): log-softmax, or (log(1-p), log p) for one channel."""
    logits = logits.float()
    if use_sigmoid(logits, sigmoid):
        return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=1)
    return F.log_softmax(logits, dim=1)


def class_target(target: Tensor, n_classes: int) -> Tensor:
    """Target as class ids in [0, C): foreground = target > 0 in binary mode."""
    target = target.long()
    return (target > 0).long() if n_classes == 2 else target


def one_hot(target: Tensor, n_classes: int) -> Tensor:
    """(B, *S) ids -> (B, C, *S) fp32 one-hot."""
    encoded = F.one_hot(target, n_classes)  # (B, *S, C)
    return encoded.movedim(-1, 1).float()


def target_log_prob(log_p: Tensor, ids: Tensor) -> Tensor:
    """Log-probability of the target class per voxel: (B, C, *S), (B, *S) -> (B, *S)."""
    return log_p.gather(1, ids.unsqueeze(1)).squeeze(1)


def valid_weights(target: Tensor, mask: Tensor | None) -> Tensor:
    """(B, *S) fp32 weights: 1 on valid voxels, 0 elsewhere."""
    if mask is None:
        return torch.ones(target.shape, dtype=torch.float32, device=target.device)
    return mask.to(dtype=torch.float32, device=target.device)


def zero_like(logits: Tensor) -> Tensor:
    """A 0 loss connected to the graph (no valid voxel in the batch)."""
    return logits.float().sum() * 0.0


def masked_mean(values: Tensor, weights: Tensor, logits: Tensor) -> Tensor:
    """``sum(w v) / sum(w)`` of per-voxel values; a graph-connected 0 when ``sum(w) <= 0``.

    Args:
        values: (B, *S) per-voxel loss.
        weights: (B, *S) non-negative weights (0 on invalid voxels).
        logits: the network output, only to connect the 0 loss to the graph.
    """
    total = weights.sum()
    if total <= 0:
        return zero_like(logits)
    return (values * weights).sum() / total


def per_class_sum(values: Tensor) -> Tensor:
    """Sum (B, C, *S) over the spatial axes: per sample and class, (B, C)."""
    return values.sum(tuple(range(2, values.ndim)))


def select_classes(values: Tensor, include_background: bool) -> Tensor:
    """Drop channel 0 (background) from a (B, C) tensor unless asked to keep it."""
    return values if include_background else values[:, 1:]
