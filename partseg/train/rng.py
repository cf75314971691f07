"""Seeding and saving the python / numpy / torch random number generators.

The states are kept in a ``torch.load(..., weights_only=True)``-loadable form (tensors, ints,
lists), so a checkpoint can carry them and a resumed run draws the same numbers.

Example:
    >>> seed_everything(0)
    >>> state = rng_state()
    >>> a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    >>> set_rng_state(state)
    >>> a == (random.random(), float(np.random.rand()), float(torch.rand(1)))
    True
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states in a ``weights_only``-loadable form (tensors, ints, lists)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": [version, list(state), gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states returned by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))


__all__: Sequence[str] = ("rng_state", "seed_everything", "set_rng_state")
