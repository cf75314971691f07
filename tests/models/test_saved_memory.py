"""saved_tensor_bytes: checkpointing and bf16 shrink what autograd keeps."""

from __future__ import annotations

import pytest
import torch

from partseg.models import ModelConfig, build_model, saved_tensor_bytes


def test_counts_a_single_conv_exactly():
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    # conv saves its input (64 floats); the default target (mean) saves nothing
    assert saved_tensor_bytes(conv, x) == 64 * 4


@pytest.mark.parametrize("name", ["unet", "residual_se_unet", "deepmedic"])
def test_checkpointing_then_bf16_shrink_saved_bytes(name):
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, spatial_dims=3, in_channels=2, out_channels=3, depth=3,
                      base_width=4, deepmedic_widths=(4, 4, 4, 4), deepmedic_fc_width=4,
                      deepmedic_factor=2)  # fmt: skip
    model = build_model(cfg).train()
    x = torch.randn(1, 2, 16, 16, 16)
    plain = saved_tensor_bytes(model, x)
    model.set_grad_checkpointing(True)
    ckpt = saved_tensor_bytes(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ckpt_bf16 = saved_tensor_bytes(model, x)
    model.set_grad_checkpointing(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = saved_tensor_bytes(model, x)
    assert ckpt < 0.5 * plain
    assert bf16 < plain
    assert ckpt_bf16 < ckpt
    assert ckpt_bf16 < bf16
