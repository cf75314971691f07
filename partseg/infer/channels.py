"""Compatibility alias: derived input channels now live in :mod:`partseg.channels`.

The dataset (training) and the predictor share one implementation; import it from
``partseg.channels``. This module re-exports it for older imports.
"""

from __future__ import annotations

from partseg.channels import add_sobel_channel, build_derive, sobel_contour

__all__ = ["add_sobel_channel", "build_derive", "sobel_contour"]
