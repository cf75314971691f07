"""Autocast (bf16 and fp16 on CPU): forward and backward stay finite, checkpointing or not."""

from __future__ import annotations

import pytest
import torch

from partseg.models import ModelConfig, build_model


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("name", ["unet", "dilated_unet", "residual_se_unet", "deepmedic"])
def test_autocast_forward_backward_finite(name, checkpointing, dtype):
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, spatial_dims=3, in_channels=2, out_channels=3, depth=3,
                      base_width=4, upsample="interpolate", se_reduction=2,
                      deep_supervision=name != "deepmedic", deepmedic_widths=(4, 4, 4, 4),
                      deepmedic_fc_width=4, deepmedic_factor=2)  # fmt: skip
    model = build_model(cfg).train()
    model.set_grad_checkpointing(checkpointing)
    x = torch.randn(2, 2, 16, 16, 16)
    with torch.autocast("cpu", dtype=dtype):
        out = model(x)
        outs = out if isinstance(out, list) else [out]
        assert outs[0].dtype == dtype
        loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    assert torch.isfinite(loss)
    for name_p, p in model.named_parameters():
        assert p.grad is not None, name_p
        assert torch.isfinite(p.grad).all(), name_p
        assert p.grad.dtype == torch.float32


def test_bf16_close_to_fp32_in_eval():
    torch.manual_seed(0)
    cfg = ModelConfig(spatial_dims=2, in_channels=1, out_channels=2, depth=3, base_width=4)
    model = build_model(cfg).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x).float()
    assert (half - full).abs().max() < 0.05 * full.abs().max() + 1e-3
