"""Fixtures of the store tests; the raw-data writers live in ``rawdata.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from rawdata import write_brats


@pytest.fixture
def brats_dir(tmp_path: Path) -> Path:
    """Two BraTS 2020 cases (labels 0, 1, 2, 4) in one folder per case."""
    return write_brats(tmp_path / "brats")
