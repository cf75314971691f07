"""Bytes that autograd keeps between the forward and the backward pass of one step.

:func:`saved_tensor_bytes` is the ``saved_activation_mb`` cost of the compare report on a CPU and
the figure ``tools/bench_memory.py`` compares (the memory planner measures its own peak of live
bytes, see :mod:`partseg.train.planner`). It counts every tensor saved for backward (through
``torch.autograd.graph.saved_tensors_hooks``) plus the inputs that checkpointed stages keep for
their recomputation (non-reentrant checkpointing holds those by reference, outside the hooks),
each storage once (finer checkpoint units keep their boundaries too).

Example:
    >>> import torch
    >>> from partseg.models import ModelConfig, build_model
    >>> model = build_model(ModelConfig(spatial_dims=2, in_channels=1, out_channels=2,
    ...                                 depth=2, base_width=4))
    >>> saved_tensor_bytes(model, torch.randn(1, 1, 16, 16)) > 0
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from partseg.models.checkpointing import observe_kept_inputs


def _default_target(output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    outputs = output if isinstance(output, list) else [output]
    return sum(o.float().mean() for o in outputs)  # a mean saves nothing for backward


def saved_tensor_bytes(
    model: nn.Module,
    x: torch.Tensor,
    target_fn: Callable[[torch.Tensor | list[torch.Tensor]], torch.Tensor] | None = None,
    *,
    parameter_copies: bool = False,
    backward: bool = True,
) -> int:
    """Runs ``target_fn(model(x)).backward()`` and returns the bytes saved for backward.

    Storages are deduplicated by data pointer, so a tensor saved by several ops (or a view of
    it) counts once. Parameters are excluded (they live regardless of the step), and so are, by
    default, the low-precision copies of the parameters that autocast makes and convolutions
    save (a fixed cost of about half the parameter bytes, independent of the input size).
    Tensors the forward pass saves in the autocast dtype count at that size, so call this inside
    ``torch.autocast`` to measure mixed precision. Gradients are left in ``model``.

    Args:
        model: the network, in the mode (train/eval, checkpointing) to measure.
        x: an input batch, e.g. (B, C, Z, Y, X).
        target_fn: maps the model output to a scalar loss; default: mean of the logits.
        parameter_copies: also count autocast's casted copies of the parameters.
        backward: run the backward pass (and leave gradients); False measures the forward
            alone, which is enough to count what is saved and much faster at full size.

    Returns:
        The number of bytes of distinct saved storages.
    """
    target_fn = target_fn or _default_target
    params = {id(p) for p in model.parameters()}
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def record(t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage.data_ptr() in param_storages:
            return
        if not parameter_copies and _is_parameter_copy(t, params):
            return
        storages[storage.data_ptr()] = storage.nbytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        record(t)
        return t

    def keep_unit_inputs(inputs: tuple[torch.Tensor, ...]) -> None:
        for value in inputs:
            record(value)

    # the inputs checkpoint units keep are seen in the first forward only, not in the
    # recomputation during backward
    with (
        observe_kept_inputs(model, keep_unit_inputs),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        loss = target_fn(model(x))
    if backward:
        loss.backward()
    return sum(storages.values())


def _is_parameter_copy(t: torch.Tensor, params: set[int]) -> bool:
    """True for a cast of a parameter (autocast's weight copies): a ToCopy of a leaf param."""
    grad_fn = t.grad_fn
    if grad_fn is None or not grad_fn.next_functions:
        return False
    source = grad_fn.next_functions[0][0]
    return id(getattr(source, "variable", None)) in params
