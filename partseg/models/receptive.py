"""Theoretical receptive field of a chain of layers, per axis, in input voxels.

Each layer is a :class:`LayerSpec` that maps a range of its output positions to the range of
input positions they read. Composing the chain backwards from one output voxel p gives the input
interval [lo(p), hi(p)] it depends on. With strides, that interval is not centred on p and its
offsets depend on the phase of p (p mod the total stride), so we evaluate one full period of
phases and report

    halo = (max_p (p - lo(p)), max_p (hi(p) - p))      # input voxels read left / right of p
                                                        # (p * net stride for a sub-chain)
    receptive field = 2 * max(halo) + 1                 # centred window holding all of them

A partition margin >= max(halo) = receptive_field // 2 voxels on each side therefore contains
every input any core voxel depends on. The field is reported centred (symmetric) so that
consumers can take half of it as the margin even where the halo is lopsided (strided convs
followed by transposed convs read more on one side). Without phase effects this equals the
textbook recursion ``rf += (footprint - 1) * jump; jump *= stride``; with strides it can exceed
it by a few voxels (the textbook value is the widest single output's interval, not the span of
offsets over all output phases).

Worked example, 2-level U-Net (3-conv x2, 2-max-pool, 3-conv x2, 2-transposed conv, 3-conv x2):
textbook 1 +2 +2 =5, pool +1 =6 (jump 2), +4 +4 =14, transposed conv +0 (jump 1), +2 +2 =18.
An even output o reads inputs [o - 8, o + 9], an odd one [o - 9, o + 8]: halo (9, 9), field 19.

A network with branches (skips, residuals) reports its longest chain: the branches read a subset
of its inputs. Operations that pool over the whole input (squeeze-and-excitation, instance norm)
have no finite receptive field: models flag them with ``is_local``.

Example:
    >>> chain = [LayerSpec(3), LayerSpec(3), LayerSpec(2, stride=2, padding=0), LayerSpec(3)]
    >>> receptive_halo(chain)  # output p sits on input 2p and reads inputs 2p-4 .. 2p+5
    (4, 5)
    >>> receptive_field(chain)
    11
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class LayerSpec:
    """One layer as seen along one axis.

    A downsampling or stride-1 layer (``upsample == 1``) reads, for outputs [a, b], inputs
    [a * stride - padding, b * stride - padding + footprint - 1]. An upsampling layer by ``u``
    reads, for output o, coarse inputs floor((o + shift) / u) .. + kernel - 1.

    Args:
        kernel: kernel size (for upsampling: coarse positions read per output, 1 for a
            transposed conv whose kernel equals its stride or nearest, 2 for linear).
        stride: downsampling factor.
        dilation: dilation of the kernel.
        padding: zero padding on the low side; None means "same" ((footprint - 1) // 2).
        upsample: upsampling factor.
        shift: phase of an upsampling layer (-1 for x2 linear, align_corners=False).
    """

    kernel: int
    stride: int = 1
    dilation: int = 1
    padding: int | None = None
    upsample: int = 1
    shift: int = 0

    @property
    def footprint(self) -> int:
        """Input positions read by one output position."""
        return (self.kernel - 1) * self.dilation + 1

    def input_range(self, lo: int, hi: int) -> tuple[int, int]:
        """Input positions read by the output positions lo..hi (inclusive)."""
        if self.upsample > 1:
            u = self.upsample
            return (lo + self.shift) // u, (hi + self.shift) // u + self.kernel - 1
        pad = (self.footprint - 1) // 2 if self.padding is None else self.padding
        return lo * self.stride - pad, hi * self.stride - pad + self.footprint - 1


def receptive_halo(layers: Sequence[LayerSpec]) -> tuple[int, int]:
    """Input voxels (left, right) any output voxel may read, over all stride phases.

    Example:
        >>> receptive_halo([LayerSpec(2, stride=2, padding=0), LayerSpec(1, upsample=2)])
        (1, 1)
    """
    period = math.prod(layer.stride * layer.upsample for layer in layers)
    # input voxels per output step (1 for a whole segmentation network)
    jump = Fraction(math.prod(layer.stride for layer in layers))
    jump /= math.prod(layer.upsample for layer in layers)
    left = right = 0
    for p in range(period):
        lo, hi = p, p
        for layer in reversed(layers):
            lo, hi = layer.input_range(lo, hi)
        centre = p * jump  # where output p sits on the input grid
        left, right = max(left, math.ceil(centre - lo)), max(right, math.ceil(hi - centre))
    return left, right


def receptive_field(layers: Sequence[LayerSpec]) -> int:
    """Width, in input voxels per axis, of the centred window holding every input any output
    voxel reads: 2 * max(halo) + 1.

    Example:
        >>> receptive_field([LayerSpec(3, dilation=4)])
        9
    """
    return 2 * max(receptive_halo(layers)) + 1
