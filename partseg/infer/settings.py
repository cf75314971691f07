"""How a case is predicted: one frozen, validated settings object for every caller.

``partseg predict`` fills it from its options, ``partseg compare`` from ``evaluation:``, and
training's validation from the run's config; :class:`~partseg.infer.pipeline.CasePredictor`
does the rest. Every name is checked against its registry (modes, blends, precision modes,
devices) when the settings are made, before any model is loaded. Importing this module loads
no torch.

Example:
    >>> PredictSettings(mode="grid", blend="gaussian").overlap is None  # 0.5 of a core by default
    True
    >>> PredictSettings(mode="grid", blend="crop", overlap=0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    partseg.errors.ConfigError: overlap=0.5 with blend='crop': crop keeps each core once ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from partseg.devices import check_device_name
from partseg.errors import ConfigError
from partseg.infer.blends import Overlap, check_overlap
from partseg.infer.modes import MODES
from partseg.infer.partitions import Margin, parse_margin
from partseg.precision import PRECISION_MODES


@dataclass(frozen=True)
class PredictSettings:
    """Prediction settings (see ``partseg predict --help`` for each option).

    Attributes:
        mode: a :data:`~partseg.infer.modes.MODES` name (``--partition``): ``exact`` (the
            layer-wise engine, equal to ``none``), ``grid`` (minicubes: margin, blend and
            overlap apply to it only) or ``none`` (the whole-volume reference).
        margin: context per side for ``grid``: None (the trained margin), whole voxels, or
            ``"exact"`` (half the receptive field, a multiple of the stride).
        blend: a :data:`~partseg.infer.blends.BLENDS` name (``crop`` keeps each core once).
        overlap: for blends: a fraction of the core (float) or voxels (int) shared by
            neighbouring predicted regions; None: 0.5 for blends, none for ``crop``.
        tta: average the logits of all flips of the spatial axes.
        precision: ``off`` (fp32, the default: probabilities exact to float rounding),
            ``auto``, ``bf16`` or ``fp16`` (:func:`~partseg.precision.resolve_precision`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:mod:`partseg.devices`).
        batch_size: minicubes (or slices) per forward pass.
        min_component_size: remove predicted components smaller than this, per class (0: off).
        keep_largest: keep only the largest connected foreground component.
        nonzero_mask: set predictions outside the head (the voxels zero in every input channel,
            holes filled; :func:`~partseg.infer.postprocess.case_nonzero_mask`) to background.
    """

    mode: str = "exact"
    margin: Margin = None
    blend: str = "crop"
    overlap: Overlap = None
    tta: bool = False
    precision: str = "off"
    device: str = "auto"
    batch_size: int = 2
    min_component_size: int = 0
    keep_largest: bool = False
    nonzero_mask: bool = False

    def __post_init__(self) -> None:
        MODES.check(self.mode, key="partition")
        parse_margin(self.margin)
        check_overlap(self.blend, self.overlap, key="overlap")
        if self.precision not in PRECISION_MODES:
            raise ConfigError(f"amp={self.precision!r}: use one of {', '.join(PRECISION_MODES)}")
        check_device_name(self.device, key="device")
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if int(self.min_component_size) < 0:
            raise ConfigError(f"min component size must be >= 0, got {self.min_component_size}")
        grid_only = {"margin": self.margin, "overlap": self.overlap}
        grid_only["blend"] = None if self.blend == "crop" else self.blend
        given = [f"{k}={v!r}" for k, v in grid_only.items() if v is not None]
        if given and self.mode != "grid":
            raise ConfigError(
                f"{', '.join(given)} shape the minicube grid, but the prediction mode is "
                f"{self.mode!r}; add --partition grid (evaluation.partition: grid) to tile, or "
                "drop them: the exact mode equals model(volume) without a margin"
            )

    def recorded(self) -> dict[str, Any]:
        """The settings that shape the output (not device or batch size), as JSON values."""
        return {
            "mode": self.mode,
            "margin": self.margin,
            "blend": self.blend,
            "overlap": self.overlap,
            "tta": self.tta,
            "precision": self.precision,
            "min_component_size": self.min_component_size,
            "keep_largest": self.keep_largest,
            # only when on: predictions recorded before the option existed keep their identity
            **({"nonzero_mask": True} if self.nonzero_mask else {}),
        }
