"""Shared fixtures of the training tests: a tiny labelled store and the tiny recipe."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_yaml() -> Path:
    """``configs/tiny.yaml``: a seconds-long 3D recipe for 2-channel 16^3 cases, 3 classes."""
    return Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def write_tiny_store(
    url: str | os.PathLike,
    n_cases: int = 4,
    shape=(16, 16, 16),
    classes: tuple[str, ...] = ("background", "c1", "c2"),
) -> str:
    """Four 2-channel 16^3 cases: nested spheres, class k of radius 5 / k (k >= 1)."""
    from partseg.store.writer import create_store

    classes = list(classes)
    mapping = [[k, k] for k in range(len(classes))]
    index = {"channels": ["a", "b"], "classes": classes, "label_mapping": mapping}
    writer = create_store(url, {**index, "chunks": [8, 8, 8], "case_ids": []})
    ids = []
    z, y, x = np.indices(shape)
    for i in range(n_cases):
        rng = np.random.default_rng(i)
        centre = np.array(shape) // 2 + rng.integers(-2, 3, 3)
        radius = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
        label = np.zeros(shape, np.uint8)
        for k in range(1, len(classes)):
            label[radius < 5 / k] = k
        image = rng.normal(0, 0.3, (2, *shape)).astype(np.float32) + label[None] * 1.0
        counts = {str(k): int((label == k).sum()) for k in range(len(classes))}
        locations = np.concatenate(
            [np.c_[np.full(20, k), np.argwhere(label == k)[:20]] for k in range(len(classes))]
        )
        attrs = {
            "shape": list(shape),
            "spacing": [1.0, 1.0, 1.0],
            "channels": ["a", "b"],
            "classes": classes,
            "has_label": True,
            "voxel_counts": counts,
        }
        writer.write_case(f"case{i}", image, label, attrs, locations, (8, 8, 8))
        ids.append(f"case{i}")
    writer.write_index({**writer.index(), "case_ids": ids})
    return os.fspath(url)


@pytest.fixture(scope="session")
def store_writer():
    """:func:`write_tiny_store`, for tests that need a store of other classes."""
    return write_tiny_store


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny store, written once per session (tests only read it)."""
    return write_tiny_store(tmp_path_factory.mktemp("store") / "tiny.zarr")
