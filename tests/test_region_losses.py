"""Region (multi-label) losses: one sigmoid per region, nnU-Net's Dice + BCE, masks honoured."""

from __future__ import annotations

import pytest
import torch

from partseg.errors import ConfigError
from partseg.losses import DeepSupervisionLoss, DiceLoss, LossConfig, RegionLoss, build_loss
from partseg.losses.deep_supervision import nearest_resize
from partseg.losses.regions import region_target

BRATS = [(1, 2, 3), (2, 3), (3,)]  # whole tumour, tumour core, enhancing (class ids)


def _batch(seed: int = 0, shape=(2, 3, 6, 5)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64)  # (B, R, Y, X)
    target = torch.randint(0, 4, (shape[0], *shape[2:]), generator=g)  # class ids
    return logits, target


def _reference(logits, target, mask, regions, *, batch_dice=False):
    """nnU-Net's DC_and_BCE by hand: per region soft Dice (+1 smoothing) and BCE, averaged."""
    valid = mask.double()
    total = 0.0
    for r, ids in enumerate(regions):
        p = torch.sigmoid(logits[:, r])
        g = torch.isin(target, torch.tensor(ids)).double()
        dims = (0, 1, 2) if batch_dice else (1, 2)
        tp = (p * g * valid).sum(dims)
        size = (p * valid).sum(dims) + (g * valid).sum(dims)
        dice = 1 - ((2 * tp + 1) / (size + 1)).mean()
        bce = -(g * torch.log(p) + (1 - g) * torch.log(1 - p))
        total = total + dice + (bce * valid).sum() / valid.sum()
    return total / len(regions)


@pytest.mark.parametrize("batch_dice", [False, True])
def test_dice_ce_on_regions_is_nnunets_sigmoid_dice_plus_bce(batch_dice: bool) -> None:
    logits, target = _batch()
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[:, :, -2:] = False  # e.g. the zero padding past the volume: counts nowhere
    loss = LossConfig("dice_ce", {"batch_dice": batch_dice}).build(regions=BRATS)
    assert isinstance(loss, RegionLoss)
    value = loss(logits, target, mask)
    expected = _reference(logits, target, mask, BRATS, batch_dice=batch_dice)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    cropped = loss(logits[..., :-2], target[..., :-2], mask[..., :-2])  # invalid voxels dropped
    assert value.item() == pytest.approx(cropped.item(), rel=1e-5)


def test_every_region_trains_its_own_channel() -> None:
    logits, target = _batch(1)
    logits.requires_grad_(True)
    RegionLoss(build_loss("dice_ce"), BRATS)(logits, target).backward()
    assert logits.grad is not None and all(logits.grad[:, r].abs().sum() > 0 for r in range(3))
    target_masks = region_target(target, BRATS)
    assert target_masks.shape == (2, 3, 6, 5)
    assert bool((target_masks[:, 1] <= target_masks[:, 0]).all())  # nested: core in whole tumour


def test_deep_supervision_resizes_class_ids_before_they_become_regions() -> None:
    logits, target = _batch(2, shape=(1, 3, 8, 8))
    half = logits[..., ::2, ::2].clone()
    region = RegionLoss(DiceLoss(), BRATS)
    ds = DeepSupervisionLoss(region)
    weights = ds.level_weights(2)
    expected = weights[0] * region(logits, target) + weights[1] * region(
        half, nearest_resize(target, (4, 4))
    )
    assert ds([logits, half], target).item() == pytest.approx(expected.item())


def test_a_region_count_unlike_the_outputs_is_a_config_error() -> None:
    logits, target = _batch(shape=(1, 4, 4, 4))
    with pytest.raises(ConfigError, match="4 output channels for 3 regions"):
        RegionLoss(build_loss("ce"), BRATS)(logits, target)
    with pytest.raises(ConfigError, match="every region needs class ids"):
        RegionLoss(build_loss("ce"), [(1,), ()])


def test_adaptive_loss_weights_still_update_through_the_region_wrapper() -> None:
    loss = LossConfig("adaptive_tversky_ce").build(regions=BRATS)
    logits, target = _batch(3)
    loss(logits.float(), target)
    weights = DeepSupervisionLoss(loss).end_epoch()
    assert weights is not None and weights["tversky"] + weights["ce"] == pytest.approx(1.0)
    assert weights["tversky"] != 0.5  # the epoch's terms moved them
