"""Tests of partseg.losses: hand-computed values, masks, gradients, training, state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from partseg.errors import ConfigError
from partseg.losses import (
    LOSSES,
    AdaptiveTverskyCELoss,
    CrossEntropyLoss,
    DeepSupervisionLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    LossConfig,
    RegionLoss,
    TopKLoss,
    TverskyLoss,
    WeightedDiceLoss,
    build_loss,
    loss_parameters,
)
from partseg.losses.registry import source_parameters

# A 1 x 4 binary example written as 2-channel softmax logits log(1 - p), log(p), so the
# foreground probabilities are exactly P.
P = [0.2, 0.6, 0.9, 0.1]
T = [0, 1, 1, 0]


def two_class_logits(probs: list[float]) -> torch.Tensor:
    """(1, 2, len) logits whose softmax foreground probability is ``probs``."""
    p = torch.tensor(probs, dtype=torch.float64)
    return torch.stack([torch.log1p(-p), torch.log(p)]).unsqueeze(0).float()


def target(values: list[int]) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.long)


LOGITS, TARGET = two_class_logits(P), target(T)
# Hand counts of the foreground: TP = 0.6 + 0.9 = 1.5, |y^| = 1.8, |y| = 2 -> FP 0.3, FN 0.5.
CE_VOXELS = [-math.log(0.8), -math.log(0.6), -math.log(0.9), -math.log(0.9)]


# ------------------------------------------------------------------ hand-computed values


def test_cross_entropy_value_mask_and_weights() -> None:
    assert CrossEntropyLoss()(LOGITS, TARGET).item() == pytest.approx(sum(CE_VOXELS) / 4, 1e-5)
    mask = torch.tensor([[True, True, False, False]])
    assert CrossEntropyLoss()(LOGITS, TARGET, mask).item() == pytest.approx(
        (CE_VOXELS[0] + CE_VOXELS[1]) / 2, 1e-5
    )
    weighted = (1 * CE_VOXELS[0] + 3 * CE_VOXELS[1] + 3 * CE_VOXELS[2] + 1 * CE_VOXELS[3]) / 8
    value = CrossEntropyLoss(weight=[1.0, 3.0])(LOGITS, TARGET)
    assert value.item() == pytest.approx(weighted, 1e-5)


def test_cross_entropy_sigmoid_equals_softmax_form() -> None:
    # one channel with logit log(p / (1 - p)) is the binary task of the two-channel softmax
    p = torch.tensor(P)
    logit = torch.log(p / (1 - p)).reshape(1, 1, 4)
    assert CrossEntropyLoss()(logit, TARGET).item() == pytest.approx(sum(CE_VOXELS) / 4, 1e-5)
    assert CrossEntropyLoss(sigmoid=True)(logit, TARGET).item() == pytest.approx(
        sum(CE_VOXELS) / 4, 1e-5
    )


def test_dice_value_eq1() -> None:
    # foreground: (2 * 1.5 + 1) / (1.8 + 2 + 1) = 4 / 4.8
    assert DiceLoss()(LOGITS, TARGET).item() == pytest.approx(1 - 4 / 4.8, 1e-5)
    # background: p = .8 .4 .1 .9, y = 1 0 0 1: TP 1.7, |y^| 2.2, |y| 2 -> 4.4 / 5.2
    both = DiceLoss(include_background=True)(LOGITS, TARGET).item()
    assert both == pytest.approx(1 - (4 / 4.8 + 4.4 / 5.2) / 2, 1e-5)
    assert DiceLoss(smooth=0)(LOGITS, TARGET).item() == pytest.approx(1 - 3 / 3.8, 1e-5)


def test_dice_mask_excludes_voxels() -> None:
    mask = torch.tensor([[True, True, True, False]])  # drop the p = 0.1 background voxel
    assert DiceLoss()(LOGITS, TARGET, mask).item() == pytest.approx(1 - 4 / 4.7, 1e-5)


def test_dice_batch_versus_per_sample() -> None:
    logits = torch.cat([LOGITS, two_class_logits([0.5, 0.5, 0.5, 0.5])])
    tgt = torch.cat([TARGET, target([1, 0, 0, 0])])
    # sample 2: TP 0.5, |y^| 2, |y| 1 -> (1 + 1) / (3 + 1) = 0.5
    per_sample = DiceLoss()(logits, tgt).item()
    assert per_sample == pytest.approx(1 - (4 / 4.8 + 0.5) / 2, 1e-5)
    # batch: TP 2.0, |y^| 3.8, |y| 3 -> 5 / 7.8
    assert DiceLoss(batch_dice=True)(logits, tgt).item() == pytest.approx(1 - 5 / 7.8, 1e-5)


def test_tversky_and_focal_tversky_values() -> None:
    # TI = (1.5 + 1) / (1.5 + 0.3 * 0.3 + 0.7 * 0.5 + 1)
    assert TverskyLoss(0.3, 0.7)(LOGITS, TARGET).item() == pytest.approx(1 - 2.5 / 2.94, 1e-5)
    assert TverskyLoss(0.5, 0.5, smooth=0)(LOGITS, TARGET).item() == pytest.approx(
        DiceLoss(smooth=0)(LOGITS, TARGET).item(), 1e-6
    )
    tl = 1 - 1.5 / 1.94  # smooth 0
    ftl = FocalTverskyLoss(0.3, 0.7, gamma=4 / 3, smooth=0)(LOGITS, TARGET).item()
    assert ftl == pytest.approx(tl**0.75, 1e-5)
    assert FocalTverskyLoss(gamma=1.0, smooth=0)(LOGITS, TARGET).item() == pytest.approx(tl, 1e-5)


def test_focal_value() -> None:
    pt = [0.8, 0.6, 0.9, 0.9]
    expected = [(1 - p) ** 2 * -math.log(p) for p in pt]
    assert FocalLoss(gamma=2)(LOGITS, TARGET).item() == pytest.approx(sum(expected) / 4, 1e-5)
    alpha_t = [0.75, 0.25, 0.25, 0.75]  # alpha = 0.25 for foreground, 0.75 for background
    weighted = sum(a * e for a, e in zip(alpha_t, expected, strict=True)) / 4
    assert FocalLoss(gamma=2, alpha=0.25)(LOGITS, TARGET).item() == pytest.approx(weighted, 1e-5)
    assert FocalLoss(gamma=0)(LOGITS, TARGET).item() == pytest.approx(sum(CE_VOXELS) / 4, 1e-5)


def test_topk_value() -> None:
    # CE per voxel: .223 .511 .105 .105; top 50 % = the two largest
    top2 = (CE_VOXELS[1] + CE_VOXELS[0]) / 2
    assert TopKLoss(k=50)(LOGITS, TARGET).item() == pytest.approx(top2, 1e-5)
    assert TopKLoss(k=10)(LOGITS, TARGET).item() == pytest.approx(CE_VOXELS[1], 1e-5)
    mask = torch.tensor([[True, False, True, True]])  # hide the hardest voxel
    assert TopKLoss(k=10)(LOGITS, TARGET, mask).item() == pytest.approx(CE_VOXELS[0], 1e-5)


def test_dice_topk_and_dice_ce_are_sums() -> None:
    dice = 1 - 4 / 4.8
    assert build_loss("dice_ce")(LOGITS, TARGET).item() == pytest.approx(
        dice + sum(CE_VOXELS) / 4, 1e-5
    )
    assert build_loss("dice_topk", k=50)(LOGITS, TARGET).item() == pytest.approx(
        dice + (CE_VOXELS[0] + CE_VOXELS[1]) / 2, 1e-5
    )


def test_weighted_dice_eq1_value_and_gradient() -> None:
    s = 1e-4
    inter = 0.6 + 0.9  # GT . Pred
    squares = 2 + (0.2**2 + 0.6**2 + 0.9**2 + 0.1**2)  # GT^2 + Pred^2
    dsc = 2 * (inter + s / 2) / (squares + s)
    logits = LOGITS.clone().requires_grad_(True)
    value = WeightedDiceLoss(beta=1.0)(logits, TARGET)
    assert value.item() == pytest.approx(-(1 - dsc) * dsc, 1e-5)
    value.backward()
    # the weight (1 - dsc)^beta is a constant: gradient = -(1 - dsc) * d(dsc)
    plain = logits.detach().clone().requires_grad_(True)
    WeightedDiceLoss(beta=0.0)(plain, TARGET).backward()  # -dsc
    torch.testing.assert_close(logits.grad, (1 - dsc) * plain.grad)


def test_sigmoid_one_channel_dice() -> None:
    p = torch.tensor(P)
    logit = torch.log(p / (1 - p)).reshape(1, 1, 4)
    assert DiceLoss()(logit, TARGET).item() == pytest.approx(1 - 4 / 4.8, 1e-5)
    with pytest.raises(ConfigError, match="one foreground channel"):
        DiceLoss(sigmoid=True)(LOGITS, TARGET)


# ------------------------------------------------------------------ generic properties

ALL = sorted(LOSSES)


def random_problem(ndim: int, k: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    spatial = (4,) * ndim
    logits = torch.randn((2, k, *spatial), generator=gen)
    tgt = torch.randint(0, k, (2, *spatial), generator=gen)
    mask = torch.ones((2, *spatial), dtype=torch.bool)
    mask[:, 0] = False  # first slab is "outside the volume"
    return logits, tgt, mask


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", ALL)
def test_masked_voxels_have_no_gradient_and_grads_are_finite(name: str, ndim: int) -> None:
    logits, tgt, mask = random_problem(ndim)
    logits.requires_grad_(True)
    value = build_loss(name)(logits, tgt, mask)
    assert value.dtype == torch.float32 and value.ndim == 0
    value.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[:, :, 0].abs().max() == 0  # masked slab
    assert logits.grad[:, :, 1:].abs().max() > 0


@pytest.mark.parametrize("name", ALL)
def test_masked_voxels_do_not_change_the_value(name: str) -> None:
    logits, tgt, mask = random_problem(3)
    loss = build_loss(name)
    before = loss(logits, tgt, mask)
    logits[:, :, 0] = 100 * torch.randn_like(logits[:, :, 0])
    tgt[:, 0] = 0
    torch.testing.assert_close(loss(logits, tgt, mask), before)


@pytest.mark.parametrize("name", ALL)
def test_half_precision_logits_give_fp32(name: str) -> None:
    logits, tgt, _ = random_problem(3)
    value16 = build_loss(name)(logits.to(torch.bfloat16), tgt)
    value32 = build_loss(name)(logits.to(torch.bfloat16).float(), tgt)
    assert value16.dtype == torch.float32
    torch.testing.assert_close(value16, value32)


@pytest.mark.parametrize("name", ALL)
def test_autocast_logits_give_fp32_loss(name: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(2, 3, 3, padding=1)
    image, tgt = synthetic(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(image)
        value = build_loss(name)(logits, tgt)
    assert logits.dtype == torch.bfloat16 and value.dtype == torch.float32
    torch.testing.assert_close(value, build_loss(name)(logits.float(), tgt))


@pytest.mark.parametrize("name", ALL)
def test_perfect_prediction_is_finite(name: str) -> None:
    tgt = torch.tensor([[0, 1, 2, 1]])
    logits = (20.0 * nn.functional.one_hot(tgt, 3).movedim(-1, 1).float()).requires_grad_(True)
    value = build_loss(name)(logits, tgt)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", ALL)
def test_empty_mask_gives_zero_loss(name: str) -> None:
    logits, tgt, mask = random_problem(2)
    logits.requires_grad_(True)
    value = build_loss(name)(logits, tgt, torch.zeros_like(mask))
    assert value.item() == pytest.approx(0.0, abs=1e-4)  # smoothing makes Dice-like terms 1
    value.backward()
    assert logits.grad.abs().max() == 0


def test_shape_mismatch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="target shape"):
        DiceLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


# ------------------------------------------------------------------ training


def synthetic(ndim: int, seed: int = 0):
    """Two input channels that encode a 3-class map (8^ndim) plus noise."""
    gen = torch.Generator().manual_seed(seed)
    spatial = (8,) * ndim
    tgt = torch.zeros((2, *spatial), dtype=torch.long)
    tgt[(slice(None), *(slice(2, 6),) * ndim)] = 1
    tgt[(slice(None), *(slice(3, 5),) * ndim)] = 2
    image = torch.stack([(tgt == 1).float(), (tgt == 2).float()], dim=1)
    return image + 0.1 * torch.randn(image.shape, generator=gen), tgt


def soft_dice_of(logits: torch.Tensor, tgt: torch.Tensor) -> float:
    return 1.0 - DiceLoss(smooth=0)(logits, tgt).item()


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", ALL)
def test_each_loss_trains_a_tiny_model(name: str, ndim: int) -> None:
    torch.manual_seed(0)
    image, tgt = synthetic(ndim)
    conv = (nn.Conv2d if ndim == 2 else nn.Conv3d)(2, 3, 3, padding=1)
    loss = build_loss(name)
    opt = torch.optim.Adam(conv.parameters(), lr=0.05)
    values, dices = [], []
    for _ in range(20):
        opt.zero_grad()
        logits = conv(image)
        value = loss(logits, tgt)
        value.backward()
        opt.step()
        values.append(value.item())
        dices.append(soft_dice_of(logits.detach(), tgt))
    assert dices[-1] > dices[0] + 0.1
    if name == "weighted_dice":
        # its value is -(1 - d)^beta d: not monotone in the Dice, so judge the Dice only
        return
    assert values[-1] < 0.8 * values[0]


# ------------------------------------------------------------------ adaptive TverskyCE


def test_adaptive_tversky_ce_follows_eq_8_to_11() -> None:
    loss = AdaptiveTverskyCELoss(alpha=0.5, beta=0.5)
    l_t, l_ce = 1 - 2.5 / 2.9, sum(CE_VOXELS) / 4  # TI = (1.5 + 1) / (1.5 + .15 + .25 + 1)
    first = loss(LOGITS, TARGET)
    assert first.item() == pytest.approx(0.5 * l_t + 0.5 * l_ce, 1e-5)
    loss(LOGITS, TARGET)  # two batches of the same epoch
    weights = loss.end_epoch()
    w_t = l_t / (l_t + l_ce)  # eq. 9
    assert weights["tversky"] == pytest.approx(w_t, 1e-6)
    assert weights["ce"] == pytest.approx(1 - w_t, 1e-6)  # eq. 10-11
    assert loss(LOGITS, TARGET).item() == pytest.approx(w_t * l_t + (1 - w_t) * l_ce, 1e-5)
    assert int(loss.count) == 1 and float(loss.sums.sum()) > 0


def test_adaptive_tversky_ce_state_round_trip() -> None:
    loss = AdaptiveTverskyCELoss()
    loss(LOGITS, TARGET)
    loss.end_epoch()
    loss(LOGITS, TARGET)  # a half-finished epoch
    state = loss.state_dict()
    assert {"weights", "sums", "count"} <= set(state)
    restored = AdaptiveTverskyCELoss()
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.weights, loss.weights)
    torch.testing.assert_close(restored.sums, loss.sums)
    assert restored.end_epoch() == loss.end_epoch()


def test_adaptive_tversky_ce_ignores_eval_and_no_grad() -> None:
    loss = AdaptiveTverskyCELoss()
    with torch.no_grad():
        loss(LOGITS, TARGET)
    loss.eval()
    loss(LOGITS, TARGET)
    assert int(loss.count) == 0
    assert loss.end_epoch() == {"tversky": 0.5, "ce": 0.5}


# ------------------------------------------------------------------ deep supervision


def test_deep_supervision_weights_and_downsampling() -> None:
    gen = torch.Generator().manual_seed(1)
    full = torch.randn((1, 3, 8, 8, 8), generator=gen)
    half = torch.randn((1, 3, 4, 4, 4), generator=gen)
    quarter = torch.randn((1, 3, 2, 2, 2), generator=gen)
    tgt = torch.randint(0, 3, (1, 8, 8, 8), generator=gen)
    mask = torch.rand((1, 8, 8, 8), generator=gen) > 0.3
    inner = DiceLoss()
    ds = DeepSupervisionLoss(inner)
    value = ds([full, half, quarter], tgt, mask)
    expected = (
        4 / 7 * inner(full, tgt, mask)
        + 2 / 7 * inner(half, tgt[:, ::2, ::2, ::2], mask[:, ::2, ::2, ::2])
        + 1 / 7 * inner(quarter, tgt[:, ::4, ::4, ::4], mask[:, ::4, ::4, ::4])
    )
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(ds(full, tgt, mask), inner(full, tgt, mask))
    custom = DeepSupervisionLoss(inner, weights=[1.0, 1.0, 0.0])([full, half, quarter], tgt)
    torch.testing.assert_close(
        custom, 0.5 * inner(full, tgt) + 0.5 * inner(half, tgt[:, ::2, ::2, ::2])
    )


def test_deep_supervision_forwards_end_epoch_and_state() -> None:
    ds = DeepSupervisionLoss(AdaptiveTverskyCELoss())
    ds([LOGITS, LOGITS[:, :, ::2]], TARGET)
    assert "loss.weights" in ds.state_dict()
    weights = ds.end_epoch()
    assert weights is not None and weights["tversky"] != 0.5
    with pytest.raises(ConfigError, match="2 weights for 3"):
        DeepSupervisionLoss(DiceLoss(), [1, 1])([LOGITS] * 3, TARGET)


# ------------------------------------------------------------------ factory and config


def test_build_loss_unknown_name_and_parameter() -> None:
    with pytest.raises(ConfigError, match="did you mean 'dice_ce'"):
        build_loss("dice_cee")
    with pytest.raises(ConfigError, match="did you mean 'gamma'"):
        build_loss("focal_tversky", gama=2)
    assert isinstance(build_loss("focal", gamma=1.0), FocalLoss)


def test_loss_config_is_frozen_and_builds() -> None:
    config = LossConfig("tversky", {"alpha": 0.7, "beta": 0.3})
    assert isinstance(config.build(), TverskyLoss)
    assert LossConfig().name == "dice_ce" and LossConfig().params == {}
    with pytest.raises(AttributeError):
        config.name = "dice"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="did you mean 'tversky'"):
        LossConfig("tverski")


def test_every_exported_loss_is_registered_topk_included() -> None:
    import partseg.losses as losses

    exported = {getattr(losses, name) for name in losses.__all__ if name.endswith("Loss")}
    registered = {LOSSES.get(name) for name in LOSSES}
    assert exported - registered == {DeepSupervisionLoss, RegionLoss}  # wrappers of any loss
    assert LOSSES.get("topk") is TopKLoss
    assert build_loss("topk", k=25).k == 25.0
    assert LossConfig("topk", {"k": 5}).build().k == 5.0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_parameters_read_from_source_match_the_signature(name: str) -> None:
    import inspect

    cls = LOSSES.get(name)
    signature = tuple(p for p in inspect.signature(cls.__init__).parameters if p != "self")
    target = next(e.target for e in LOSSES.entries() if e.name == name)
    assert source_parameters(target) == signature == loss_parameters(name)
