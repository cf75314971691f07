"""The BraTS label convention: contiguous class ids, the original label values, the regions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

#: Contiguous BraTS class ids: 1 necrotic / non-enhancing core, 2 edema, 3 enhancing tumour.
BRATS_CLASSES: tuple[str, ...] = ("background", "necrotic", "edema", "enhancing")

#: Original BraTS label values -> contiguous class ids (label 3 is unused before BraTS 2023).
BRATS_LABEL_MAPPING: Mapping[int, int] = MappingProxyType({0: 0, 1: 1, 2: 2, 4: 3})

#: The BraTS evaluation regions on contiguous class ids.
BRATS_REGIONS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"whole_tumor": (1, 2, 3), "tumor_core": (1, 3), "enhancing_tumor": (3,)}
)


def regions_for(classes: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The evaluation regions of a label set: the BraTS regions for the BraTS classes, else none.

    Example:
        >>> list(regions_for(BRATS_CLASSES)), regions_for(("background", "aneurysm"))
        (['whole_tumor', 'tumor_core', 'enhancing_tumor'], {})
    """
    return dict(BRATS_REGIONS) if tuple(classes) == BRATS_CLASSES else {}
