"""Multi-label (region) training: any loss, one sigmoid per region, as nnU-Net trains BraTS.

Region-based labels (:mod:`partseg.store.regions`) give the network one output channel per
region (whole tumour, tumour core, enhancing tumour), each a sigmoid, and a voxel may belong
to several regions. :class:`RegionLoss` turns the class-id target into one 0/1 target per
region and applies the wrapped loss to each region channel in the **one-channel sigmoid mode**
every partseg loss already has (:mod:`partseg.losses`), then averages over the regions. With
``dice_ce`` this is nnU-Net's ``DC_and_BCE_loss``: a soft Dice per region (per sample, or over
the batch with ``batch_dice``) plus the binary cross-entropy averaged over voxels and regions.
Class weights of a loss are then (negative, positive) weights, as in the one-channel mode.

Deep supervision wraps it (``DeepSupervisionLoss(RegionLoss(loss, ...))``), so the class-id
target is resized before it becomes region masks.

Example:
    >>> import torch
    >>> from partseg.losses import build_loss
    >>> loss = RegionLoss(build_loss("dice_ce"), [(1, 2, 3), (2, 3), (3,)])
    >>> logits = torch.zeros(1, 3, 4, 4, requires_grad=True)          # (B, R, Y, X)
    >>> target = torch.randint(0, 4, (1, 4, 4))                      # class ids
    >>> value = loss(logits, target)
    >>> value.backward()
    >>> region_target(torch.tensor([[0, 1, 2, 3]]), [(1, 2, 3), (3,)]).tolist()
    [[[0, 1, 1, 1], [0, 0, 0, 1]]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from partseg.errors import ConfigError

__all__ = ["RegionLoss", "region_target"]


def region_target(target: Tensor, regions: Sequence[Sequence[int]]) -> Tensor:
    """(B, *S) class ids -> (B, R, *S) int64 0/1 masks, one per region (a union of class ids)."""
    masks = [torch.isin(target, torch.as_tensor(list(r), device=target.device)) for r in regions]
    return torch.stack(masks, dim=1).long()


class RegionLoss(nn.Module):
    """``mean_r loss(logits[:, r], target in region r, mask)`` over the region channels.

    Args:
        loss: any partseg loss; it sees one logit channel per call, so it runs in its
            one-channel sigmoid mode.
        regions: the class ids each region unites, one entry per output channel.
    """

    def __init__(self, loss: nn.Module, regions: Sequence[Sequence[int]]) -> None:
        super().__init__()
        if not regions or any(not r for r in regions):
            raise ConfigError(f"region loss: every region needs class ids, got {regions}")
        self.loss = loss
        self.regions = tuple(tuple(int(c) for c in r) for r in regions)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if logits.shape[1] != len(self.regions):
            raise ConfigError(
                f"region loss: {logits.shape[1]} output channels for {len(self.regions)} regions; "
                "set model.out_channels to the number of regions (or leave it unset)"
            )
        masks = region_target(target, self.regions)  # (B, R, *S)
        terms = [
            self.loss(logits[:, r : r + 1], masks[:, r], mask) for r in range(len(self.regions))
        ]
        return torch.stack(terms).mean()

    def end_epoch(self) -> dict[str, float] | None:
        """Forward an adaptive loss's ``end_epoch`` (see :class:`DeepSupervisionLoss`)."""
        inner = getattr(self.loss, "end_epoch", None)
        return inner() if callable(inner) else None
