"""partseg: minicube-partitioned 2D/3D U-Net segmentation of large medical volumes.

Raw scans are ingested once into a zarr chunk store; training streams minicube partitions
(core + context margin) out of it; a stitcher reassembles core predictions into full volumes.
"""

from __future__ import annotations

__version__ = "0.1.0"
