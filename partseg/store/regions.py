"""Region-based labels: nnU-Net's BraTS setting of overlapping regions trained with sigmoids.

nnU-Net v2 declares BraTS as regions in ``dataset.json``::

    "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3],
               "enhancing_tumor": 3},
    "regions_class_order": [1, 2, 3]

Each foreground entry is a region: the union of the listed label values. The network has one
output channel per region with a sigmoid each (a voxel may lie in several regions), and a
prediction becomes labels by nnU-Net's rule: every voxel gets the ``regions_class_order`` value
of the **last** region (in declaration order) whose probability exceeds 0.5, 0 where none does
(:func:`~partseg.infer.stitch.labels_from_regions`).

:class:`Regions` holds such a declaration. :func:`parse_nnunet_labels` reads it from
``dataset.json`` in **label values** (as in the files); ingest maps it to the store's class ids
(:meth:`Regions.mapped`) and records it in the store index (``"regions"``), and training copies
it into every checkpoint, so prediction and validation know the outputs are regions.

Example:
    >>> labels = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3],
    ...           "enhancing_tumor": 3}
    >>> names, regions = parse_nnunet_labels(labels, [1, 2, 3])
    >>> names
    {0: 'background', 1: 'label_1', 2: 'label_2', 3: 'enhancing_tumor'}
    >>> regions.labels, regions.order
    (((1, 2, 3), (2, 3), (3,)), (1, 2, 3))
    >>> regions.target(np.array([0, 1, 2, 3])).tolist()     # (R, *S): WT, TC, ET per voxel
    [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Regions", "parse_nnunet_labels"]


@dataclass(frozen=True)
class Regions:
    """Overlapping regions of a label set and the order that turns them back into labels.

    Attributes:
        names: one name per region, e.g. ``("whole_tumor", "tumor_core", "enhancing_tumor")``.
        labels: the label values (as read) or class ids (in a store) each region unites.
        order: nnU-Net's ``regions_class_order``: the label value (class id) written where a
            region is the last one predicted.
    """

    names: tuple[str, ...]
    labels: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "labels", tuple(tuple(int(v) for v in r) for r in self.labels))
        object.__setattr__(self, "order", tuple(int(v) for v in self.order))
        if not self.names or not len(self.names) == len(self.labels) == len(self.order):
            raise ValueError(
                f"regions need one name, one label set and one regions_class_order value each; "
                f"got {len(self.names)} names, {len(self.labels)} label sets and "
                f"{len(self.order)} order values"
            )
        if any(not r or 0 in r for r in self.labels) or 0 in self.order:
            raise ValueError(
                f"every region needs foreground label values (not 0), got {self.labels} with "
                f"order {self.order}"
            )
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"region names repeat: {list(self.names)}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def values(self) -> tuple[int, ...]:
        """Every label value (class id) a region uses, and the order's, sorted."""
        return tuple(sorted({v for r in self.labels for v in r} | set(self.order)))

    def mapped(self, mapping: Mapping[int, int]) -> Regions:
        """These regions with label values replaced by class ids (``mapping``: value -> id).

        Raises:
            ValueError: a region uses a value the mapping lacks.
        """
        missing = sorted(set(self.values) - set(mapping))
        if missing:
            raise ValueError(f"regions use label values {missing} that are not declared labels")
        return Regions(
            self.names,
            tuple(tuple(mapping[v] for v in r) for r in self.labels),
            tuple(mapping[v] for v in self.order),
        )

    def target(self, label: np.ndarray) -> np.ndarray:
        """(R, *S) uint8 region masks of a label array (*S)."""
        label = np.asarray(label)
        return np.stack([np.isin(label, r) for r in self.labels]).astype(np.uint8)

    def evaluation(self) -> dict[str, tuple[int, ...]]:
        """Region name -> label values, the form :func:`partseg.metrics.evaluate_case` takes."""
        return dict(zip(self.names, self.labels, strict=True))

    def to_json(self) -> dict[str, Any]:
        """The store-index / checkpoint form."""
        return {
            "names": list(self.names),
            "labels": [list(r) for r in self.labels],
            "order": list(self.order),
        }

    @classmethod
    def from_json(cls, data: Any) -> Regions | None:
        """Inverse of :meth:`to_json`; None for None (no regions).

        Raises:
            ValueError: ``data`` is not a valid declaration (untrusted: from a store or a
                checkpoint).
        """
        if data is None:
            return None
        try:
            return cls(tuple(data["names"]), tuple(data["labels"]), tuple(data["order"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"regions {data!r} are not {{names, labels, order}} lists") from err


def parse_nnunet_labels(
    labels: Mapping[str, Any], order: Sequence[int] | None
) -> tuple[dict[int, str], Regions | None]:
    """Label names and regions of an nnU-Net v2 ``labels`` dict (``{name: value or [values]}``).

    Without a list of several values the labels are plain classes and no regions are returned.
    With one (nnU-Net's ``has_regions``), every foreground entry is a region and ``order``
    (``regions_class_order``) must give one value per region. A label value is named by an
    entry that lists it alone (``"enhancing_tumor": 3``); the other values of a region
    declaration are named ``label_<value>``.

    Raises:
        ValueError: a value that is not an integer (or list of them), a background that is not
            0, or a region declaration without a matching ``regions_class_order``.
    """
    entries = {str(k): _values(k, v) for k, v in labels.items()}
    names = {vals[0]: name for name, vals in entries.items() if len(vals) == 1}
    if all(len(vals) == 1 for vals in entries.values()):
        return dict(sorted(names.items())), None
    background = [name for name, vals in entries.items() if vals == (0,)]
    if len(background) != 1:
        raise ValueError("region-based labels need exactly one background entry with value 0")
    regions = {name: vals for name, vals in entries.items() if name != background[0]}
    if order is None or len(order) != len(regions):
        raise ValueError(
            f"region-based labels ({', '.join(regions)}) need regions_class_order with one label "
            f"value per region, got {order!r}"
        )
    declared = Regions(tuple(regions), tuple(regions.values()), tuple(order))
    every = {v: names.get(v, f"label_{v}") for v in (0, *declared.values)}
    return dict(sorted(every.items())), declared


def _values(key: object, value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, list | tuple) else [value]
    whole = [isinstance(v, int | float) and not isinstance(v, bool) and v == int(v) for v in values]
    if not values or not all(whole):
        raise ValueError(f"label entry {key!r}: {value!r} is not an integer or a list of them")
    return tuple(int(v) for v in values)
