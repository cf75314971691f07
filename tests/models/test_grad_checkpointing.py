"""Gradient checkpointing in flat units: same outputs, gradients and BatchNorm buffers.

Units recompute bit for bit; the split full-resolution stages compute the conv after a skip
concatenation as two partial convs summed, so results equal the plain forward up to rounding.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from partseg.models import ModelConfig, build_model
from partseg.models.checkpointing import Stage

VARIANTS = ["unet", "dilated_unet", "residual_se_unet", "deepmedic"]


def tiny(name: str, spatial_dims: int, **kwargs) -> ModelConfig:
    values = {
        "name": name,
        "spatial_dims": spatial_dims,
        "in_channels": 2,
        "out_channels": 3,
        "depth": 3,
        "base_width": 4,
        "se_reduction": 2,
        "deepmedic_widths": (4, 4, 6, 6),
        "deepmedic_fc_width": 8,
        "deepmedic_factor": 2,
        "deep_supervision": name != "deepmedic",
        "dropout": 0.2,
    }
    values.update(kwargs)
    return ModelConfig(**values)


def loss_of(output) -> torch.Tensor:
    outputs = output if isinstance(output, list) else [output]
    return sum((o.float() ** 2).mean() for o in outputs)


def step(model: nn.Module, x: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """One training step without optimiser (gradients accumulate); returns the outputs."""
    torch.manual_seed(seed)  # same dropout masks in both models
    out = model(x)
    loss_of(out).backward()
    outs = out if isinstance(out, list) else [out]
    return [o.detach() for o in outs]


class ConvWork(TorchDispatchMode):
    """Multiply-accumulates of the forward convolutions, per weight storage (a conv computed
    as two partial convs on weight slices counts as the whole conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.work: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.convolution.default:
            weight = args[1]
            key = weight.untyped_storage().data_ptr()
            self.work[key] = self.work.get(key, 0) + out.numel() * weight[0].numel()
        return out


def conv_work(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Forward-conv work of one forward + backward, by conv weight name."""
    with ConvWork() as counter:
        loss_of(model(x)).backward()
    names = {p.untyped_storage().data_ptr(): n for n, p in model.named_parameters() if p.ndim > 2}
    return {names[k]: v for k, v in counter.work.items()}


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", VARIANTS)
def test_checkpointing_is_exact_over_two_steps(name, spatial_dims):
    torch.manual_seed(0)
    plain = build_model(tiny(name, spatial_dims)).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    assert all(s.checkpointing for s in ckpt.modules() if isinstance(s, Stage))
    size = 8 if spatial_dims == 3 else 16
    for seed in (1, 2):  # after one and after two steps
        x = torch.randn(2, 2, *([size] * spatial_dims))
        tol = {"rtol": 1e-5, "atol": 1e-6}
        for got, expected in zip(step(ckpt, x, seed), step(plain, x, seed), strict=True):
            torch.testing.assert_close(got, expected, **tol)
        for (name_p, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters(),
                                       strict=True):  # fmt: skip
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name_p)
        for (name_b, b), (_, c) in zip(plain.named_buffers(), ckpt.named_buffers(), strict=True):
            torch.testing.assert_close(c, b, **tol, msg=name_b)
    tracked = [b for n, b in ckpt.named_buffers() if n.endswith("num_batches_tracked")]
    if ckpt.config.norm == "batch":
        assert tracked and all(int(t) == 2 for t in tracked)


@pytest.mark.parametrize(("name", "spatial_dims"), [("unet", 2), ("residual_se_unet", 3),
                                                    ("deepmedic", 3)])  # fmt: skip
def test_each_conv_is_recomputed_exactly_once(name, spatial_dims):
    model = build_model(tiny(name, spatial_dims, deep_supervision=False)).train()
    x = torch.randn(1, 2, *([12 if name == "deepmedic" else 16] * spatial_dims))
    plain = conv_work(model, x)
    model.set_grad_checkpointing(True)
    ckpt = conv_work(model, x)
    assert set(ckpt) == set(plain) == {n for n, p in model.named_parameters() if p.ndim > 2}
    head = {k for k in plain if k.startswith("head")}
    assert {k: ckpt[k] for k in head} == {k: plain[k] for k in head}  # not checkpointed
    # flat units: every staged conv is computed twice (forward + one recomputation), never more
    assert {k: ckpt[k] / plain[k] for k in plain if k not in head} == {
        k: 2.0 for k in plain if k not in head
    }


def test_switch_off_and_eval_mode_run_plainly():
    model = build_model(tiny("unet", 2))
    model.set_grad_checkpointing(True)
    model.set_grad_checkpointing(False)
    assert not any(s.checkpointing for s in model.modules() if isinstance(s, Stage))
    model.set_grad_checkpointing(True)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, 16, 16))
    assert out.shape == (1, 3, 16, 16)


@pytest.mark.parametrize(("name", "at_most"), [("unet", 0.8), ("residual_se_unet", 0.95),
                                               ("deepmedic", 0.9)])  # fmt: skip
def test_finer_units_lower_the_activation_peak(name, at_most):
    from partseg.config import config_from_dict
    from partseg.train.activations import measure_step

    config = config_from_dict({"model": dict(vars(tiny(name, 3, base_width=8)))})
    size = (24, 24, 24)
    model = build_model(config.model)
    split = measure_step(config, size, size, batch_size=2, checkpointing=True, model=model)
    for stage in model.modules():
        if isinstance(stage, Stage):
            stage.split = False
    whole = measure_step(config, size, size, batch_size=2, checkpointing=True, model=model)
    plain = measure_step(config, size, size, batch_size=2, checkpointing=False, model=model)
    assert split.peak <= at_most * whole.peak < plain.peak
    assert split.saved < 0.6 * plain.saved  # finer units keep more boundaries, still far less
