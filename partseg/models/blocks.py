"""Building blocks shared by the networks, for 2D and 3D through ``spatial_dims``.

Every block knows the chain of layers along its longest path (``layer_specs()``), so a model's
receptive field is computed from what it is actually built of (see
:mod:`partseg.models.receptive`). All convolutions are zero-padded "same": a stride-1 block keeps
the spatial size, a stride-2 block halves it.

Example:
    >>> import torch
    >>> block = DoubleConv(3, 4, 8, norm="batch", activation="relu")
    >>> block(torch.zeros(1, 4, 8, 8, 8)).shape
    torch.Size([1, 8, 8, 8, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from partseg.models.checkpointing import Unit, chain_units
from partseg.models.receptive import LayerSpec

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVG_POOL = {2: nn.AvgPool2d, 3: nn.AvgPool3d}
_LINEAR_MODE = {2: "bilinear", 3: "trilinear"}


def conv(dims: int, c_in: int, c_out: int, kernel: int = 3, **kwargs: object) -> nn.Module:
    """A 2D or 3D convolution (no padding logic; see :class:`ConvNormAct`)."""
    return _CONV[dims](c_in, c_out, kernel, **kwargs)


def make_norm(norm: str, dims: int, channels: int) -> nn.Module:
    """Normalisation layer: batch, instance (affine), group (<= 8 groups dividing C) or none."""
    if norm == "batch":
        return _BATCH_NORM[dims](channels)
    if norm == "instance":
        return _INSTANCE_NORM[dims](channels, affine=True)
    if norm == "group":
        groups = max(g for g in range(1, 9) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


def make_activation(activation: str) -> nn.Module:
    """ReLU / LeakyReLU(0.01) in place (they save only their output), or GELU."""
    if activation == "relu":
        return nn.ReLU(inplace=True)
    if activation == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    return nn.GELU()


class Chain(nn.Sequential):
    """Blocks run one after the other, which gradient checkpointing may split between.

    ``checkpoint_units()`` flattens nested chains into their blocks: one checkpoint unit per
    block with parameters (see :func:`partseg.models.checkpointing.chain_units`).
    """

    def layer_specs(self) -> list[LayerSpec]:
        return [
            spec
            for child in self.children()
            if hasattr(child, "layer_specs")
            for spec in child.layer_specs()
        ]

    def blocks(self) -> list[nn.Module]:
        """The blocks of this chain with nested chains flattened, in order."""
        return [b for c in self for b in (c.blocks() if isinstance(c, Chain) else [c])]

    def checkpoint_units(self) -> list[Unit]:
        return chain_units(self.blocks())


class ConvNormAct(nn.Sequential):
    """conv (zero "same" padding) -> norm -> activation -> optional dropout.

    The conv has no bias when a norm follows (the norm's shift replaces it).
    """

    def __init__(
        self,
        dims: int,
        c_in: int,
        c_out: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
        norm: str = "batch",
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        padding = dilation * (kernel - 1) // 2
        layers = [
            conv(
                dims,
                c_in,
                c_out,
                kernel,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=norm == "none",
            ),
            make_norm(norm, dims, c_out),
            make_activation(activation),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)
        self.spec = LayerSpec(kernel, stride=stride, dilation=dilation)

    def layer_specs(self) -> list[LayerSpec]:
        return [self.spec]

    def forward_concat(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``self(torch.cat([a, b], 1))`` without materialising the concatenation.

        The conv of a channel concatenation is the sum of the convs of its parts with the
        matching slices of the weight; the (B, C_a + C_b, *S) input never exists, which spares
        a full-resolution decoder the largest tensor of its recomputation. Equal to the
        concatenating forward up to float rounding (the sum is taken in two steps).
        """
        conv = self[0]
        weight = conv.weight  # (C_out, C_a + C_b, *k)
        split = a.shape[1]
        out = conv._conv_forward(a, weight[:, :split], conv.bias)  # (B, C_out, *S)
        out = out.add_(conv._conv_forward(b, weight[:, split:], None))
        for layer in list(self)[1:]:
            out = layer(out)
        return out


class DoubleConv(Chain):
    """Two ConvNormAct of the plain U-Net level: (B, c_in, *S) -> (B, c_out, *S)."""

    def __init__(
        self,
        dims: int,
        c_in: int,
        c_out: int,
        *,
        norm: str,
        activation: str,
        dropout: float = 0.0,
        dilations: tuple[int, int] = (1, 1),
    ) -> None:
        first = ConvNormAct(
            dims, c_in, c_out, norm=norm, activation=activation, dilation=dilations[0],
            dropout=dropout,
        )  # fmt: skip
        second = ConvNormAct(
            dims, c_out, c_out, norm=norm, activation=activation, dilation=dilations[1]
        )
        super().__init__(first, second)


class DilatedCascade(nn.Module):
    """Multi-rate dilated bottleneck: h_i = CNA_{d_i}(h_{i-1}), output = sum_i h_i.

    The cascade grows the receptive field by 2 * sum(d_i) positions of the bottleneck grid; the
    sum fuses the rates (every h_i reaches the output directly), as in the dilated bottleneck of
    Giddwani et al. 2020 taken up by the dilated UNet-3D of the pancreas paper.
    """

    def __init__(
        self,
        dims: int,
        c_in: int,
        c_out: int,
        dilations: tuple[int, ...],
        *,
        norm: str,
        activation: str,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ConvNormAct(
                dims,
                c_in if i == 0 else c_out,
                c_out,
                dilation=d,
                norm=norm,
                activation=activation,
                dropout=dropout,
            )
            for i, d in enumerate(dilations)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers[0](x)  # (B, c_out, *S)
        total = h
        for layer in self.layers[1:]:
            h = layer(h)
            total = total + h
        return total

    def layer_specs(self) -> list[LayerSpec]:
        return [spec for layer in self.layers for spec in layer.layer_specs()]


class SqueezeExcitation(nn.Module):
    """Channel gating of Hu et al.: x * sigmoid(W2 relu(W1 mean_spatial(x))).

    The spatial mean makes every output depend on the whole input: not local.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=tuple(range(2, x.ndim)))  # (B, C)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))  # (B, C)
        return x * gate.view(*gate.shape, *([1] * (x.ndim - 2)))


class ResidualContext(nn.Module):
    """Isensee's context module with an optional SE gate: x + SE(CNA(drop(CNA(x))))."""

    def __init__(
        self,
        dims: int,
        channels: int,
        *,
        norm: str,
        activation: str,
        dropout: float,
        se_reduction: int,
    ) -> None:
        super().__init__()
        self.body = DoubleConv(
            dims, channels, channels, norm=norm, activation=activation, dropout=dropout
        )
        self.se = SqueezeExcitation(channels, se_reduction) if se_reduction else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se(self.body(x))

    def layer_specs(self) -> list[LayerSpec]:
        return self.body.layer_specs()


class Downsample(nn.Module):
    """x2 downsampling: 2-kernel max pooling or a 3-kernel stride-2 conv-norm-act."""

    def __init__(
        self, dims: int, c_in: int, c_out: int, mode: str, *, norm: str, activation: str
    ) -> None:
        super().__init__()
        self.mode = mode
        if mode == "maxpool":
            self.op: nn.Module = _MAX_POOL[dims](2)
            self.spec = LayerSpec(2, stride=2, padding=0)
            self.out_channels = c_in
        else:
            self.op = ConvNormAct(dims, c_in, c_out, stride=2, norm=norm, activation=activation)
            self.spec = LayerSpec(3, stride=2)
            self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "maxpool":
            # CPU autocast runs max pooling in fp32, which would save an fp32 copy of x; the max
            # is exact in any dtype, so pool in x's own dtype
            with torch.autocast(x.device.type, enabled=False):
                return self.op(x)
        return self.op(x)

    def layer_specs(self) -> list[LayerSpec]:
        return [self.spec]


class Upsample(nn.Module):
    """x2 upsampling: 2-kernel stride-2 transposed conv, or linear interpolation + 1-kernel conv."""

    def __init__(self, dims: int, c_in: int, c_out: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.linear_mode = _LINEAR_MODE[dims]
        if mode == "transpose":
            self.op: nn.Module = _CONV_T[dims](c_in, c_out, 2, stride=2)
            # each output position reads one input position: footprint 1
            self.spec = LayerSpec(1, upsample=2)
        else:
            self.op = conv(dims, c_in, c_out, 1)
            # linear x2 (align_corners=False): output o reads coarse (o - 1) // 2 and the next
            self.spec = LayerSpec(2, upsample=2, shift=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transpose":
            return self.op(x)
        # the 1-kernel conv commutes with linear interpolation: run it on the coarse grid
        x = self.op(x)
        return F.interpolate(x, scale_factor=2, mode=self.linear_mode, align_corners=False)

    def layer_specs(self) -> list[LayerSpec]:
        return [self.spec]


def channels_last_format(dims: int) -> torch.memory_format:
    """``torch.channels_last`` for 2D, ``torch.channels_last_3d`` for 3D."""
    return torch.channels_last if dims == 2 else torch.channels_last_3d


def avg_pool(dims: int, factor: int) -> nn.Module:
    """Average pooling by ``factor`` (kernel == stride), DeepMedic's subsampling."""
    return _AVG_POOL[dims](factor)
