"""Lowering: a partseg network -> the graph of slab nodes the layer-wise engine runs.

Each block type of :mod:`partseg.models.blocks` has a lowering function (registered with
:func:`lowers`) that turns the block, given the nodes feeding it, into nodes of
:mod:`partseg.infer.nodes`; each network family has a wiring function (registered with
:func:`wires`) that follows its ``_forward``. A new block or family is one function and one
decorator here.

What cannot be lowered raises :class:`~partseg.errors.NotTileableError` naming the layer:
instance and group norm normalise with statistics of the whole input of every layer, which
would need a full pass per layer (the grid modes with a blend handle such models).

Example:
    >>> from partseg.models import ModelConfig, build_model
    >>> model = build_model(ModelConfig(depth=2, base_width=2, in_channels=1, out_channels=2))
    >>> graph = lower_model(model.eval(), rows=8)
    >>> [n.name for n in graph.nodes][:3], graph.output.rows
    (['input', 'encoder.0.body.0.0', 'encoder.0.body.0.1'], 8)
    >>> lower_model(build_model(ModelConfig(norm="instance", depth=2, in_channels=1,
    ...                                     out_channels=2)), rows=8)
    Traceback (most recent call last):
    ...
    partseg.errors.NotTileableError: layer encoder.0.body.0.0.1 (InstanceNorm3d) normalises with \
statistics of its whole input, which the layer-wise engine cannot compute slab by slab; use \
--partition grid with a blend (e.g. --blend gaussian)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from partseg.errors import NotTileableError
from partseg.infer import nodes as N
from partseg.models import blocks
from partseg.models.checkpointing import Stage

Inputs = tuple[N.Node, ...]
Lowering = Callable[["Builder", nn.Module, Inputs], N.Node]

_BLOCKS: list[tuple[type, Lowering]] = []
_FAMILIES: dict[str, Callable[[Builder, nn.Module, N.Node], N.Node]] = {}

#: Layers that act on each voxel alone in eval mode (may follow a conv inside its slab).
POINTWISE = (
    nn.modules.batchnorm._BatchNorm,
    nn.ReLU,
    nn.LeakyReLU,
    nn.GELU,
    nn.Dropout,
    nn.Identity,
)


def lowers(kind: type) -> Callable[[Lowering], Lowering]:
    """Register the lowering of a block type (checked in registration order, isinstance)."""

    def decorate(fn: Lowering) -> Lowering:
        _BLOCKS.append((kind, fn))
        return fn

    return decorate


def wires(class_name: str) -> Callable:
    """Register the wiring of a network family (by its class name)."""

    def decorate(fn: Callable) -> Callable:
        _FAMILIES[class_name] = fn
        return fn

    return decorate


@dataclass
class Graph:
    """The nodes in computation order (inputs before consumers); ``output`` is the logits."""

    nodes: list[N.Node]
    output: N.Node


class Builder:
    """Collects nodes while a model is lowered; names them by their module path."""

    def __init__(self, model: nn.Module, rows: int) -> None:
        self.names = {id(m): name for name, m in model.named_modules()}
        self.rows = rows
        self.nodes: list[N.Node] = []

    def name(self, module: nn.Module) -> str:
        return self.names.get(id(module), type(module).__name__)

    def add(self, node: N.Node) -> N.Node:
        node.rows = self.rows // node.scale
        self.nodes.append(node)
        return node

    def lower(self, module: nn.Module, inputs: Inputs) -> N.Node:
        """The node computing ``module(*inputs)`` (several inputs: their concatenation)."""
        for kind, fn in _BLOCKS:
            if isinstance(module, kind):
                return fn(self, module, inputs)
        raise NotTileableError(
            f"layer {self.name(module)} ({type(module).__name__}) has no layer-wise lowering; "
            "use --partition grid"
        )


def lower_model(model: nn.Module, rows: int, source: N.Source | None = None) -> Graph:
    """Lower ``model`` (in eval mode) for an input of ``rows`` rows along the slab axis.

    Raises:
        NotTileableError: a layer or family the engine cannot run exactly.
    """
    wire = next((_FAMILIES[c.__name__] for c in type(model).__mro__ if c.__name__ in _FAMILIES),
                None)  # fmt: skip  # a subclass (DilatedUNet) wires like its family
    if wire is None:
        raise NotTileableError(
            f"model {type(model).__name__} has no layer-wise wiring; use --partition grid"
        )
    builder = Builder(model, rows)
    source = builder.add(source or N.Source("input", ()))
    output = wire(builder, model, source)
    return Graph(builder.nodes, output)


def not_tileable_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot run layer-wise, or None when it can.

    Example:
        >>> from partseg.models import ModelConfig, build_model
        >>> cfg = ModelConfig(depth=2, base_width=2, in_channels=1, out_channels=2)
        >>> not_tileable_reason(build_model(cfg)) is None
        True
    """
    try:
        lower_model(model, rows=int(getattr(model, "total_stride", 1)))
    except NotTileableError as err:
        return str(err)
    return None


def _single(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    if len(inputs) != 1:
        raise NotTileableError(f"layer {builder.name(module)} takes one input, got {len(inputs)}")
    return inputs[0]


def _check_pointwise(builder: Builder, layers: list[nn.Module]) -> None:
    for layer in layers:
        if not isinstance(layer, POINTWISE):
            kind = type(layer).__name__
            why = (
                "normalises with statistics of its whole input, which the layer-wise engine "
                "cannot compute slab by slab"
                if isinstance(layer, nn.modules.instancenorm._InstanceNorm | nn.GroupNorm)
                else "is not a pointwise layer the engine knows"
            )
            raise NotTileableError(
                f"layer {builder.name(layer)} ({kind}) {why}; use --partition grid with a "
                "blend (e.g. --blend gaussian)"
            )


@lowers(blocks.ConvNormAct)
def _conv_norm_act(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    conv, *tail = list(module)
    _check_pointwise(builder, tail)
    scale = inputs[0].scale * int(conv.stride[0])
    return builder.add(N.Conv(builder.name(module), inputs, scale, conv=conv, tail=tuple(tail)))


@lowers(nn.modules.conv._ConvNd)
def _conv(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return _transposed(builder, module, inputs)
    scale = inputs[0].scale * int(module.stride[0])
    return builder.add(N.Conv(builder.name(module), inputs, scale, conv=module))


def _transposed(builder: Builder, conv: nn.Module, inputs: Inputs) -> N.Node:
    x = _single(builder, conv, inputs)
    kernel, stride = int(conv.kernel_size[0]), int(conv.stride[0])
    if kernel != stride or conv.padding[0] != 0 or x.scale % stride:
        raise NotTileableError(
            f"layer {builder.name(conv)}: transposed convs need kernel == stride and no padding"
        )
    return builder.add(N.UpTranspose(builder.name(conv), (x,), x.scale // stride, conv=conv))


@lowers(blocks.DilatedCascade)
def _dilated_cascade(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    h = builder.lower(module.layers[0], inputs)
    outputs = [h]
    for layer in module.layers[1:]:
        h = builder.lower(layer, (h,))
        outputs.append(h)
    return builder.add(N.Add(f"{builder.name(module)}.sum", tuple(outputs), h.scale))


@lowers(blocks.ResidualContext)
def _residual_context(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    x = _single(builder, module, inputs)
    gated = builder.lower(module.se, (builder.lower(module.body, (x,)),))
    return builder.add(N.Add(f"{builder.name(module)}.sum", (x, gated), x.scale))


@lowers(blocks.SqueezeExcitation)
def _squeeze_excitation(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    x = _single(builder, module, inputs)
    return builder.add(N.SqueezeExcite(builder.name(module), (x,), x.scale, se=module))


@lowers(blocks.Downsample)
def _downsample(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    if module.mode != "maxpool":
        return builder.lower(module.op, inputs)
    x = _single(builder, module, inputs)
    return builder.add(N.Pool(builder.name(module), (x,), x.scale * 2, kind="max", factor=2))


@lowers(nn.modules.pooling._AvgPoolNd)
def _avg_pool(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    x = _single(builder, module, inputs)
    factor = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
    stride = module.stride if isinstance(module.stride, int) else module.stride[0]
    if factor != stride or module.padding not in (0, (0, 0), (0, 0, 0)):
        raise NotTileableError(f"layer {builder.name(module)}: pooling needs kernel == stride")
    node = N.Pool(builder.name(module), (x,), x.scale * int(factor), kind="avg", factor=factor)
    return builder.add(node)


@lowers(blocks.Upsample)
def _upsample(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    if module.mode == "transpose":
        return _transposed(builder, module.op, inputs)
    x = _single(builder, module, inputs)
    node = N.UpLinear(builder.name(module), (x,), x.scale // 2, conv=module.op,
                      mode=module.linear_mode)  # fmt: skip
    return builder.add(node)


@lowers(Stage)
def _stage(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    return builder.lower(module.body, inputs)


@lowers(nn.Identity)
def _identity(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    return _single(builder, module, inputs)


@lowers(nn.Sequential)
def _sequential(builder: Builder, module: nn.Module, inputs: Inputs) -> N.Node:
    """Children in order; the first one reads ``inputs`` (concatenated), the others one node."""
    h: Inputs = inputs
    for child in module:
        if isinstance(child, nn.Dropout):  # identity in eval mode
            continue
        h = (builder.lower(child, h),)
    return _single(builder, module, h)


@wires("UNet")
def _unet(builder: Builder, model: nn.Module, source: N.Node) -> N.Node:
    """Follows ``UNet._forward``: encoder stages, skips, decoder stages, 1-kernel head."""
    skips = []
    h = source
    for stage in model.encoder:
        h = builder.lower(stage, (h,))
        skips.append(h)
    skips.pop()  # the bottleneck output is not a skip
    for stage in model.decoder:
        body = stage.body
        up = builder.lower(body.up, (h,))
        h = builder.lower(body.block, (up, skips.pop()))
    return builder.lower(model.head, (h,))


@wires("DeepMedic")
def _deepmedic(builder: Builder, model: nn.Module, source: N.Node) -> N.Node:
    """Follows ``DeepMedic._forward``: two pathways, nearest upsampling, 1-kernel fusion."""
    normal = _pathway(builder, model.normal.body, source)
    context = _pathway(builder, model.context.body, source)
    fusion = model.fusion.body
    name = f"{builder.name(fusion)}.up"
    up = builder.add(N.UpNearest(name, (context,), normal.scale, factor=fusion.factor))
    fused = builder.lower(fusion.fc, (normal, up))
    return builder.lower(model.head, (fused,))


def _pathway(builder: Builder, pathway: nn.Module, source: N.Node) -> N.Node:
    """Follows ``Pathway.forward``: pooling, then layers with DeepMedic's residuals."""
    h = builder.lower(pathway.pool, (source,))
    residual_from = h
    for i, layer in enumerate(pathway.layers):
        if i >= 2 and i % 2 == 0:
            residual_from = h  # the input of layer i is added to the output of layer i + 1
        out = builder.lower(layer, (h,))
        if i >= 3 and i % 2 == 1:
            name = f"{builder.name(layer)}.residual"
            out = builder.add(N.Residual(name, (out, residual_from), out.scale))
        h = out
    return h
