"""Per-stage gradient checkpointing is exact: same outputs, gradients and BatchNorm buffers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

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


def count_calls(model: nn.Module) -> dict[str, int]:
    """Counts forward calls of every conv (to prove each stage is recomputed exactly once)."""
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):

            def hook(_m, _args, _out, name=name):
                counts[name] = counts.get(name, 0) + 1

            module.register_forward_hook(hook)
    return counts


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
        for got, expected in zip(step(ckpt, x, seed), step(plain, x, seed), strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
        for (name_p, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters(),
                                       strict=True):  # fmt: skip
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=1e-7, msg=name_p)
        for (name_b, b), (_, c) in zip(plain.named_buffers(), ckpt.named_buffers(), strict=True):
            torch.testing.assert_close(c, b, rtol=0, atol=0, msg=name_b)
    tracked = [b for n, b in ckpt.named_buffers() if n.endswith("num_batches_tracked")]
    if ckpt.config.norm == "batch":
        assert tracked and all(int(t) == 2 for t in tracked)


def test_each_conv_runs_twice_with_checkpointing_once_without():
    model = build_model(tiny("unet", 2, deep_supervision=False)).train()
    counts = count_calls(model)
    x = torch.randn(1, 2, 16, 16)
    loss_of(model(x)).backward()
    assert set(counts.values()) == {1}
    counts.clear()
    model.set_grad_checkpointing(True)
    loss_of(model(x)).backward()
    head = {k: v for k, v in counts.items() if k.startswith("head")}
    staged = {k: v for k, v in counts.items() if not k.startswith("head")}
    assert head == {"head": 1}  # the head is not checkpointed
    assert set(staged.values()) == {2}  # flat: one recomputation per stage, never more


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
