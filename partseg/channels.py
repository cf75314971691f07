"""Derived input channels, one config key for training and prediction.

The aneurysm paper (Chen et al., coarse-to-fine) feeds the fine network two channels: the
vessel image and its Sobel contour. A recipe asks for derived channels with
``data.derived_channels``, a list of ``"name:source_channel"`` strings (``"sobel:0"``: the Sobel
contour of store channel 0; ``"sobel"`` alone means source channel 0). :func:`build_derive`
turns that list into one callable, ``(C, *box) -> (C + n, *box)``, which the dataset applies to
every box right after ``case.read(box)`` (before augmentation) and the predictor applies to
every input box (``predict_case(..., derive=...)``). The checkpoint keeps the resolved config,
so ``partseg predict`` rebuilds the same callable (:attr:`LoadedModel.derive
<partseg.checkpoint.LoadedModel.derive>`).

**Box border.** A derived channel is computed on the box, not the whole volume. Outside the
volume the zero pad rule applies (``mode="constant"``), and inside the volume the contour of a
box equals the contour of the whole volume except within one voxel of the box border (where the
whole volume has neighbours the box lacks). That rim lies in the margin (the context), never in
the core, as long as the margin is at least 1 voxel; the core's network input then differs from
whole-volume inference only in those rim voxels, i.e. by a little more "receptive-field"
margin. Training and prediction read the same boxes, so both see the same rim.

Example:
    >>> derive = build_derive(["sobel:0"])
    >>> derive(np.zeros((2, 4, 4, 4), np.float32)).shape
    (3, 4, 4, 4)
    >>> build_derive([]) is None
    True
    >>> derived_channel_names(["sobel:1"], ("t1", "tof"))
    ('sobel(tof)',)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from partseg.errors import ConfigError

#: A derived-channel function: (C, *box) float32 -> (C + n, *box) float32.
Derive = Callable[[np.ndarray], np.ndarray]


def sobel_contour(image: np.ndarray, *, dilate: int = 0) -> np.ndarray:
    """Sobel gradient magnitude of a (Z, Y, X) or (Y, X) image.

    The scale is fixed (a unit step gives 0.5 on the two voxels beside it), never relative to
    the box, so a box's contour matches the whole volume's away from the box border.

    Args:
        image: one channel.
        dilate: grey dilation of the image by this many voxels before the gradient (the paper
            slightly dilates the extracted arteries to smooth the vessel surface).

    Returns:
        float32 array of the image's shape; 0 where the image is flat.

    Example:
        >>> image = np.zeros((3, 3, 8), np.float32); image[..., 3:] = 1
        >>> sobel_contour(image)[1, 1].round(2).tolist()  # step at x = 3, volume end at x = 8
        [0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.5]
    """
    from scipy import ndimage

    data = np.asarray(image, np.float32)
    if dilate > 0:
        data = ndimage.grey_dilation(data, size=(2 * dilate + 1,) * data.ndim, mode="constant")
    squares = np.zeros(data.shape, np.float32)
    for axis in range(data.ndim):
        grad = ndimage.sobel(data, axis=axis, mode="constant", output=np.float32)
        squares += grad * grad
    # Sobel = central difference (2 per unit step) x [1, 2, 1] smoothing (4) per other axis
    return np.sqrt(squares) / np.float32(2 * 4 ** (data.ndim - 1))


def add_sobel_channel(image: np.ndarray, channel: int = 0, *, dilate: int = 0) -> np.ndarray:
    """Append the Sobel contour of ``image[channel]``: (C, Z, Y, X) -> (C + 1, Z, Y, X).

    Example:
        >>> add_sobel_channel(np.zeros((1, 2, 2, 2), np.float32)).shape
        (2, 2, 2, 2)
    """
    contour = sobel_contour(image[channel], dilate=dilate)
    return np.concatenate([np.asarray(image, np.float32), contour[None]], axis=0)


#: Derived channel name -> function of one channel (*box) -> (*box).
DERIVED: dict[str, Callable[[np.ndarray], np.ndarray]] = {"sobel": sobel_contour}
#: Voxels beyond a box each derived channel reads (the Sobel kernel reaches one voxel).
DERIVED_HALO: dict[str, int] = {"sobel": 1}


def parse_derived(spec: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """``["sobel:0", ...]`` -> ``(("sobel", 0), ...)``, validated.

    Raises:
        ConfigError: an unknown name (the message lists the valid ones) or a source channel
            that is not a non-negative integer.

    Example:
        >>> parse_derived(["sobel:1", "sobel"])
        (('sobel', 1), ('sobel', 0))
    """
    if isinstance(spec, str):
        spec = [spec]
    parsed = []
    for item in spec:
        name, _, source = str(item).partition(":")
        name, source = name.strip(), source.strip() or "0"
        if name not in DERIVED:
            raise ConfigError(
                f"config key data.derived_channels: unknown derived channel {name!r} in "
                f"{item!r}; valid names: {', '.join(sorted(DERIVED))} (write 'name:channel', "
                "e.g. 'sobel:0')"
            )
        if not source.isdigit():
            raise ConfigError(
                f"config key data.derived_channels: {item!r} needs a source channel index "
                "after the colon, e.g. 'sobel:0'"
            )
        parsed.append((name, int(source)))
    return tuple(parsed)


def derived_channel_names(spec: Sequence[str], channels: Sequence[str]) -> tuple[str, ...]:
    """Readable names of the derived channels, e.g. ``("sobel(flair)",)``.

    Raises:
        ConfigError: a source channel beyond the store's ``channels``.
    """
    names = []
    for name, source in parse_derived(spec):
        if source >= len(channels):
            raise ConfigError(
                f"config key data.derived_channels: '{name}:{source}' reads channel {source} "
                f"but the store has {len(channels)} channels {list(channels)}; use an index in "
                f"0..{len(channels) - 1}"
            )
        names.append(f"{name}({channels[source]})")
    return tuple(names)


@dataclass(frozen=True)
class DerivedChannels:
    """The callable behind :func:`build_derive` (a dataclass, so DataLoader workers pickle it).

    Every derived channel is computed from the box as read (the store's channels), then all are
    appended in the order given.
    """

    specs: tuple[tuple[str, int], ...]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(C, *box) -> (C + len(specs), *box) float32."""
        image = np.asarray(image, np.float32)
        if not self.specs:
            return image
        extra = [DERIVED[name](image[source])[None] for name, source in self.specs]
        return np.concatenate([image, *extra], axis=0)

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def halo(self) -> int:
        """Voxels around a box the derived channels read: a box grown by it derives exactly."""
        return max((DERIVED_HALO[name] for name, _ in self.specs), default=0)


def build_derive(spec: Sequence[str]) -> DerivedChannels | None:
    """The derived-channel callable of ``data.derived_channels`` (None for an empty list).

    Raises:
        ConfigError: see :func:`parse_derived`.
    """
    specs = parse_derived(spec)
    return DerivedChannels(specs) if specs else None
