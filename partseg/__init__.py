"""partseg: minicube-partitioned 2D/3D U-Net segmentation of large medical volumes.

Raw scans are ingested once into a zarr chunk store; training streams minicube partitions
(core + context margin) out of it; a stitcher reassembles core predictions into full volumes.

Example:
    >>> import partseg
    >>> partseg.__version__
    '0.1.0'
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "open_store"]


def __getattr__(name: str) -> Any:
    # Lazy re-export so ``import partseg`` (and ``partseg --help``) does not import zarr.
    if name == "open_store":
        from partseg.store import open_store

        return open_store
    raise AttributeError(f"module 'partseg' has no attribute {name!r}")
