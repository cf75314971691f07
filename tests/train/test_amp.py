"""Mixed-precision resolution and the single autocast / GradScaler code path."""

from __future__ import annotations

import pytest
import torch

from partseg.errors import ConfigError
from partseg.train.amp import resolve_amp


@pytest.mark.parametrize(
    ("mode", "expected", "scaler"),
    [
        ("auto", "bf16", False),
        ("bf16", "bf16", False),
        ("off", "off", False),
        ("fp16", "fp16", True),
    ],
)
def test_resolve_on_cpu(mode: str, expected: str, scaler: bool) -> None:
    amp = resolve_amp(mode, "cpu")
    assert amp.mode == expected and amp.use_scaler is scaler
    assert amp.scaler().is_enabled() is scaler


def test_autocast_switch() -> None:
    layer = torch.nn.Linear(2, 2)
    with resolve_amp("auto", "cpu").autocast():
        assert layer(torch.ones(1, 2)).dtype == torch.bfloat16
    with resolve_amp("off", "cpu").autocast():
        assert layer(torch.ones(1, 2)).dtype == torch.float32


def test_unknown_mode() -> None:
    with pytest.raises(ConfigError, match=r"train\.amp"):
        resolve_amp("fp8", "cpu")
