"""Row buffers: zero padding outside the extent, release, and the zarr storage."""

from __future__ import annotations

import pytest
import torch

from partseg.errors import GeometryError
from partseg.infer.rows import MemoryRows, ZarrRows


def rows_of(n: int, start: int = 0, dtype=torch.float32) -> torch.Tensor:
    """(1, 2, n, 3): channel c, row r, column x holds 100 c + 10 (start + r) + x."""
    c = torch.arange(2).view(1, 2, 1, 1) * 100
    r = (torch.arange(n) + start).view(1, 1, n, 1) * 10
    x = torch.arange(3).view(1, 1, 1, 3)
    return (c + r + x).to(dtype)


@pytest.mark.parametrize("storage", ["memory", "zarr"])
def test_fetch_spans_slabs_and_pads_with_zeros(tmp_path, storage: str) -> None:
    buffer = MemoryRows(5) if storage == "memory" else ZarrRows(5, tmp_path / "r.zarr")
    buffer.append(rows_of(2))
    buffer.append(rows_of(3, start=2))
    got = buffer.fetch(-2, 7)
    assert got.shape == (1, 2, 9, 3)
    assert got[0, 1, :, 0].tolist() == [0, 0, 100, 110, 120, 130, 140, 0, 0]
    assert torch.equal(buffer.fetch(1, 4), rows_of(3, start=1))


def test_released_rows_cannot_be_read_and_are_freed() -> None:
    buffer = MemoryRows(6)
    for start in (0, 2, 4):
        buffer.append(rows_of(2, start))
    before = buffer.nbytes
    buffer.release(3)
    assert buffer.nbytes == before * 2 // 3  # the slab of rows 0-1 is gone, rows 2-3 stay
    assert buffer.fetch(3, 6)[0, 0, :, 0].tolist() == [30, 40, 50]
    with pytest.raises(GeometryError, match="released"):
        buffer.fetch(2, 4)
    with pytest.raises(GeometryError, match="before they exist"):
        MemoryRows(4).fetch(0, 1)


def test_zarr_keeps_bf16_bit_exact(tmp_path) -> None:
    values = rows_of(3).to(torch.bfloat16) / 7
    buffer = ZarrRows(3, tmp_path / "b.zarr", chunk_rows=2)
    buffer.append(values)
    assert buffer.fetch(0, 3).dtype == torch.bfloat16
    assert torch.equal(buffer.fetch(0, 3), values)
    assert torch.equal(torch.cat(list(buffer.slabs()), dim=2), values)
