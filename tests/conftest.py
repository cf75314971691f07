"""Shared fixtures: keep torch on one thread so parallel CI jobs stay predictable."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
