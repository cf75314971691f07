"""One device rule: auto, cpu, cuda, cuda:N; clear errors for anything else."""

from __future__ import annotations

import pytest
import torch

from partseg.devices import check_device_name, resolve_device
from partseg.errors import ConfigError


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_known_names_pass(name):
    assert check_device_name(name) == name


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:", "cuda:x", "CPU", ""])
def test_unknown_names_say_what_is_accepted(name):
    with pytest.raises(
        ConfigError, match=f"unknown device {name!r}; use auto, cpu, cuda or cuda:N"
    ):
        resolve_device(name, key="--device")


def test_auto_is_cpu_without_cuda_and_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            resolve_device(name, key="train.device")


def test_auto_is_cuda_when_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match="only 2 CUDA GPUs"):
        resolve_device("cuda:2")
