"""No import runs back up a layer: the package's dependency order, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "partseg"

#: Lower layers never import higher ones (imports inside functions count too).
LAYERS: list[set[str]] = [
    {"errors", "lazy", "precision_modes", "registry", "durations"},
    {"atomic", "names", "geometry", "devices", "precision", "channels", "augment", "recipes"},
    {"progress"},
    {"locking", "metrics", "sampling", "models", "losses"},
    {"store", "phantom"},
    {"dataset", "config", "checkpoint"},
    {"infer", "evaluation", "report"},
    {"train"},
    {"experiments"},
    {"cli", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def unit(path: Path) -> str:
    """The top-level unit of a source file: ``partseg/infer/x.py`` -> ``infer``."""
    part = path.relative_to(PACKAGE).parts[0]
    return part.removesuffix(".py")


def imported_units(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "partseg" and len(parts) > 1:
                names.add(parts[1])
    return names


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if unit(p) != "__init__")


def test_every_unit_has_a_layer() -> None:
    units = {unit(p) for p in SOURCES} | {u for p in SOURCES for u in imported_units(p)}
    assert units - {"__init__"} <= set(LAYER), sorted(units - set(LAYER))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up_a_layer(path: Path) -> None:
    own = LAYER[unit(path)]
    upward = sorted(u for u in imported_units(path) if u in LAYER and LAYER[u] > own)
    assert not upward, f"{path.relative_to(PACKAGE)} (layer {own}) imports {upward}"
