"""The operations of the layer-wise engine: one node per layer, computed on slabs of rows.

The engine (:mod:`partseg.infer.engine`) runs a network over a whole volume as a graph of
nodes, each producing its output one **slab** at a time: the rows ``[lo, hi)`` along the first
spatial axis (Z in 3D), every row complete in the other axes (the *plane*). A node states which
rows of each input a slab needs (:meth:`Node.needs`) and computes the slab from exactly those
rows (:meth:`Node.compute`); rows outside an input's extent arrive as zeros, which is the zero
"same" padding of the whole-volume forward. Inside the plane the layers run as they are, with
their own padding, so the slab's output equals those rows of the whole-volume output.

Worked example, a 3-kernel conv (padding 1) after a 2-max-pool, 16 input rows:

* the conv's slab [0, 4) needs pool rows [-1, 5): row -1 is the zero padding row;
* the pool's rows [0, 5) need input rows [0, 10): pooling windows never straddle a slab.

Which ops are covered: convolutions of any kernel, stride and dilation (their "same" padding
along the slab axis becomes the zero rows), eval-mode BatchNorm, activations and dropout
(pointwise, applied in the conv's :attr:`Conv.tail`), max/average pooling with kernel ==
stride, transposed convs with kernel == stride, x2 linear and xf nearest upsampling, sums with
DeepMedic's channel padding, channel concatenation (a conv's several inputs) and
squeeze-and-excitation, whose whole-volume mean is a first pass over its input
(:attr:`Node.needs_all`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

Rows = tuple[int, int]


@dataclass(eq=False)
class Node:
    """One layer of the graph. ``scale`` is its stride along the slab axis w.r.t. the input.

    Attributes:
        name: for messages and statistics (e.g. ``encoder.1.conv0``).
        inputs: the nodes it reads; several inputs are concatenated along channels.
        scale: input rows per output row of the whole network input (1, 2, 4, ...).
        rows: output rows over the whole (padded) volume; set by the graph builder.
    """

    name: str
    inputs: tuple[Node, ...]
    scale: int = 1
    rows: int = field(default=0, init=False)

    #: True when the node needs every row of its input before its first slab (global stats).
    needs_all = False

    def needs(self, lo: int, hi: int) -> tuple[Rows, ...]:
        """Rows of each input that output rows ``[lo, hi)`` read (may reach outside)."""
        return tuple((lo, hi) for _ in self.inputs)

    def compute(self, lo: int, hi: int, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Output rows ``[lo, hi)``, (1, C, hi - lo, *plane), from the rows of :meth:`needs`."""
        raise NotImplementedError

    def prepare(self, slabs: Callable[[int], Iterator[torch.Tensor]]) -> None:
        """First pass of a :attr:`needs_all` node; ``slabs(i)`` yields every row of input i."""


@dataclass(eq=False)
class Source(Node):
    """The network input: rows of the padded volume, read by ``read(lo, hi)``."""

    read: Callable[[int, int], torch.Tensor] | None = None

    def compute(self, lo: int, hi: int, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        assert self.read is not None
        return self.read(lo, hi)


@dataclass(eq=False)
class Conv(Node):
    """A convolution (any kernel/stride/dilation) followed by pointwise layers (``tail``).

    Along the slab axis the conv runs unpadded on rows fetched with its halo (zeros outside the
    volume: its own zero padding); along the plane it keeps its padding.
    """

    conv: nn.Module | None = None
    tail: tuple[nn.Module, ...] = ()

    def needs(self, lo: int, hi: int) -> tuple[Rows, ...]:
        conv = self.conv
        assert conv is not None
        stride, pad, dilation = conv.stride[0], conv.padding[0], conv.dilation[0]
        reach = (conv.kernel_size[0] - 1) * dilation
        first = lo * stride - pad
        last = (hi - 1) * stride - pad + reach + 1
        return tuple((first, last) for _ in self.inputs)

    def compute(self, lo: int, hi: int, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        conv = self.conv
        assert conv is not None
        x = xs[0] if len(xs) == 1 else torch.cat(list(xs), dim=1)
        ops = {2: F.conv2d, 3: F.conv3d}[x.ndim - 2]
        padding = (0, *conv.padding[1:])
        y = ops(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)
        for layer in self.tail:
            y = layer(y)
        return y


@dataclass(eq=False)
class Pool(Node):
    """Max or average pooling whose kernel equals its stride (``factor``)."""

    kind: str = "max"
    factor: int = 2

    def needs(self, lo: int, hi: int) -> tuple[Rows, ...]:
        return ((lo * self.factor, hi * self.factor),)

    def compute(self, lo: int, hi: int, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        x = xs[0]
        dims = x.ndim - 2
        if self.kind == "max":
            # as in Downsample: the max is exact in any dtype, so pool in x's own dtype
            with torch.autocast(x.device.type, enabled=False):
                return {2: F.max_pool2d, 3: F.max_pool3d}[dims](x, self.factor)
        return {2: F.avg_pool2d, 3: F.avg_pool3d}[dims](x, self.factor)


@dataclass(eq=False)
class UpTranspose(Node):
    """A transposed conv whose kernel equals its stride: output row o reads input o // f."""

    conv: nn.Module | None = None

    @property
    def factor(self) -> int:
        assert self.conv is not None
        return int(self.conv.stride[0])

    def needs(self, lo: int, hi: int) -> tuple[Rows, ...]:
        f = self.factor
        return ((lo // f, (hi - 1) // f + 1),)

    def compute(self, lo: int, hi: int, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        conv = self.conv
        assert conv is not None
        x = xs[0]
        ops = {2: F.conv_transpose2d, 3: F.conv_transpose3d}[x.ndim - 2]
        y = ops(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.output_padding,
                conv.groups, conv.dilation)  # fmt: skip
        start = (lo // self.factor) * self.factor
        return y[:, :, lo - start : hi - start]


@dataclass(eq=False)
class UpLinear(Node):
    """x2 (bi/tri)linear upsampling (align_corners=False) after a 1-kernel conv.

    Output row o interpolates coarse rows around o / 2 - 1/4, clamped at the volume ends: the
    slab reads one coarse row more on each side and pads the volume ends by replication.
    """

    conv: nn.Module | None = None
    mode: str = "trilinear"

    def needs(self, lo: int, hi: int) -> tuple[Rows, ...]:
        coarse = self.inputs[0].rows
        return ((max(0, lo // 2 - 1), min(coarse, (hi + 1) // 2 + 1)),)

    def compute(self, lo: int, hi: int, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        conv = self.conv
        assert conv is not None
        (first, last), coarse = self.needs(lo, hi)[0], self.inputs[0].rows
        x = xs[0]
        x = {2: F.conv2d, 3: F.conv3d}[x.ndim - 2](x, conv.weight, conv.bias)
        # one replicated row at the volume ends, one real (or unused) row elsewhere
        top = x[:, :, :1] if first == 0 else x[:, :, :1] * 0
        bottom = x[:, :, -1:] if last == coarse else x[:, :, -1:] * 0
        x = torch.cat([top, x, bottom], dim=2)  # coarse rows first - 1 .. last
        y = F.interpolate(x, scale_factor=2, mode=self.mode, align_corners=False)
        start = 2 * (first - 1)
        return y[:, :, lo - start : hi - start]


@dataclass(eq=False)
class UpNearest(Node):
    """Nearest-neighbour upsampling by an integer ``factor`` (DeepMedic's context pathway)."""

    factor: int = 3

    def needs(self, lo: int, hi: int) -> tuple[Rows, ...]:
        return ((lo // self.factor, (hi - 1) // self.factor + 1),)

    def compute(self, lo: int, hi: int, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        y = F.interpolate(xs[0], scale_factor=self.factor, mode="nearest")
        start = (lo // self.factor) * self.factor
        return y[:, :, lo - start : hi - start]


@dataclass(eq=False)
class Add(Node):
    """Sum of the inputs in order; a narrower input is zero-padded to the first's channels."""

    def compute(self, lo: int, hi: int, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        total = xs[0]
        for x in xs[1:]:
            total = total + _fit_channels(x, total.shape[1])
        return total


@dataclass(eq=False)
class Residual(Node):
    """DeepMedic's residual: ``out + pad_channels(skip)`` with inputs (out, skip)."""

    def compute(self, lo: int, hi: int, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        out, skip = xs
        return out + _fit_channels(skip, out.shape[1])


@dataclass(eq=False)
class SqueezeExcite(Node):
    """Squeeze-and-excitation: the gate comes from the mean of the whole input (first pass)."""

    se: nn.Module | None = None
    gate: torch.Tensor | None = field(default=None, init=False)

    needs_all = True

    def prepare(self, slabs: Callable[[int], Iterator[torch.Tensor]]) -> None:
        se = self.se
        assert se is not None
        total, count, like = None, 0, None
        device = se.fc1.weight.device  # slabs may live in (pinned) host memory
        for x in slabs(0):  # (1, C, rows, *plane): sum in float64, one slab at a time
            x = x.to(device, non_blocking=True)
            part = x.sum(dim=tuple(range(2, x.ndim)), dtype=torch.float64)
            total = part if total is None else total + part
            count += x[0, 0].numel()
            like = x
        assert total is not None and like is not None
        squeezed = (total / count).to(like.dtype)  # (1, C): the spatial mean of the whole input
        gate = torch.sigmoid(se.fc2(F.relu(se.fc1(squeezed))))
        self.gate = gate.view(*gate.shape, *([1] * (like.ndim - 2)))

    def compute(self, lo: int, hi: int, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        assert self.gate is not None, "prepare() runs before the first slab"
        return xs[0] * self.gate


def _fit_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pad (B, C, *S) to ``channels`` channels, or keep the first ``channels``."""
    if x.shape[1] >= channels:
        return x[:, :channels]
    return F.pad(x, [0, 0] * (x.ndim - 2) + [0, channels - x.shape[1]])
