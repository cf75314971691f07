"""Mixed precision: one rule (``auto``) for training, inference and the planner."""

from __future__ import annotations

import logging

import pytest
import torch

from partseg import precision
from partseg.errors import ConfigError
from partseg.precision import native_bf16, resolve_precision


@pytest.mark.parametrize(
    ("mode", "expected", "scaler"),
    [("bf16", "bf16", False), ("off", "off", False), ("fp16", "fp16", True)],
)
def test_explicit_modes_on_cpu(mode: str, expected: str, scaler: bool) -> None:
    p = resolve_precision(mode, "cpu")
    assert p.mode == expected and p.use_scaler is scaler
    assert p.scaler().is_enabled() is scaler


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_native_bf16_on_cpu(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    p = resolve_precision("auto", "cpu")
    assert p.mode == ("bf16" if native else "off")
    assert ("native bf16" in p.reason) and (native or "fp32" in p.reason)


def test_auto_matches_this_cpu() -> None:
    expected = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "off"
    assert native_bf16("cpu") is (expected == "bf16")
    assert resolve_precision("auto", "cpu").mode == expected


@pytest.mark.parametrize(("major", "expected"), [(7, "fp16"), (8, "bf16"), (9, "bf16")])
def test_auto_on_cuda_by_capability(
    monkeypatch: pytest.MonkeyPatch, major: int, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU sm{major}0")
    p = resolve_precision("auto", torch.device("cuda"))
    assert p.mode == expected and p.use_scaler is (expected == "fp16")
    assert p.bytes_per_value == 2


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_auto_is_logged_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "_ANNOUNCED", set())
    logger, records = logging.getLogger("partseg"), _Records()
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not the attribute: it clears the enabled cache
    logger.addHandler(records)
    try:
        for _ in range(3):
            resolve_precision("auto", "cpu")
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    assert len([m for m in records.messages if "precision auto" in m]) == 1


def test_autocast_switch() -> None:
    layer = torch.nn.Linear(2, 2)
    with resolve_precision("bf16", "cpu").autocast():
        assert layer(torch.ones(1, 2)).dtype == torch.bfloat16
    with resolve_precision("off", "cpu").autocast():
        assert layer(torch.ones(1, 2)).dtype == torch.float32


def test_other_device_types_run_fp32() -> None:
    assert resolve_precision("auto", "meta").mode == "off"
    with pytest.raises(ConfigError, match="not supported on meta"):
        resolve_precision("bf16", "meta")


def test_unknown_mode_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"train\.amp='fp8'"):
        resolve_precision("fp8", "cpu", key="train.amp")
