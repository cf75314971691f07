"""``partseg plan CONFIG --gpu-mem 4GiB``: estimate training memory and fit it to a budget.

CONFIG is a training config or a recipe with ``--variant NAME`` (see :mod:`partseg.cli.train`).

The planner (:mod:`partseg.train.planner`) estimates what a training step holds on the device:
parameters, gradients, optimizer state, activations, batch, workspaces, the allocator's reserve
and the CUDA context, and proposes the largest core / batch, with mixed precision and gradient
checkpointing on or off, whose estimate leaves a safety margin of the budget free (``--safety``,
default ``train.memory_safety`` = 10%). Without a GPU, activations are measured with CPU
kernels at two small sizes and extrapolated (seconds); on a machine with a GPU the planner
calibrates on it (real training steps at small sizes) and then runs the chosen configuration
once, printing the estimate's error against the measured peak. When the config names a store
whose volumes are smaller than the core, the core is shrunk to the data first.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from partseg.cli.options import add_deprecated, add_json, add_no_progress, memory_size, share
from partseg.cli.train import add_config, add_overrides, load_run_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg plan``."""
    p = subparsers.add_parser(
        "plan",
        help="estimate training memory and pick the core / batch that fits a GPU budget",
        description="Estimate peak training memory of a recipe and propose the largest core "
        "and batch (with mixed precision and checkpointing on or off) that fit --gpu-mem "
        "with a safety margin.",
    )
    add_config(p)
    add_overrides(p, "config overrides such as model.base_width=16 (default: none)")
    p.add_argument(
        "--gpu-mem",
        type=memory_size,
        required=True,
        metavar="SIZE",
        help="budget: 4GiB, 4GB, 4096MiB or 6g",
    )
    p.add_argument(
        "--safety",
        type=share,
        default=None,
        metavar="SHARE",
        help="share of the budget to keep free, e.g. 0.1 (default: train.memory_safety, 0.1)",
    )
    p.add_argument(
        "--device",
        type=_device_type,
        default="cuda",
        metavar="DEVICE",
        help="the device to plan for: cuda (or cuda:N; a GPU: adds the CUDA context) or cpu "
        "(CPU RAM); no GPU is needed to plan for one (default: cuda)",
    )
    add_deprecated(p, "--device-type", "--device", dest="device", type=_device_type)
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="measure activations with CPU kernels even when a GPU is visible (default: "
        "calibrate on the GPU when one is visible)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the measured steps of the chosen configuration on the GPU (default: "
        "verify when a GPU is visible)",
    )
    add_no_progress(p)
    add_json(p, "the plan")
    p.set_defaults(func=run)


def _device_type(text: str) -> str:
    """``--device`` of plan: the device type planned for (``cuda:1`` plans for ``cuda``).

    Example:
        >>> _device_type("cuda:1")
        'cuda'
    """
    from partseg.cli.options import device_name

    name = device_name(text)
    if name == "auto":
        raise argparse.ArgumentTypeError("plan for cuda or cpu: name the device to plan for")
    return name.split(":")[0]


def run(args: argparse.Namespace) -> int:
    from partseg.progress import Progress
    from partseg.train.planner import (
        amp_modes,
        default_probe,
        fit_to_data,
        format_size,
        parse_size,
        plan_memory,
        require_fit,
    )

    config, _ = load_run_config(args, args.overrides)
    config = fit_to_data(config, _stderr)
    budget = parse_size(args.gpu_mem)
    probe = None if args.no_calibrate else default_probe(args.device)
    measurements = 2 * len(amp_modes(config, args.device)) * 2
    with Progress(measurements, "plan", unit="measurement", enabled=not args.no_progress,
                  interval=0) as bar:  # fmt: skip
        plan = plan_memory(
            config,
            budget,
            device_type=args.device,
            safety=args.safety,
            probe=probe,
            progress=lambda message: bar.update(note=message),
        )
    result = plan.as_dict()
    if plan.chosen is not None and not args.no_verify:
        verify_probe = probe or default_probe(args.device)
        if verify_probe is not None:
            result["check"] = _check(config, plan.chosen, verify_probe)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0 if plan.chosen is not None else 1
    print(
        f"budget {format_size(budget)} ({args.device}), keeping {plan.safety:.0%} free: "
        f"limit {format_size(plan.limit)}; {plan.n_parameters:,} parameters; device context "
        f"{format_size(plan.context)} ({plan.context_source})"
    )
    for estimate in plan.best_per_mode:
        marker = "*" if estimate == plan.chosen else " "
        print(f"{marker} {estimate.describe(budget)}")
    require_fit(plan)  # raises a ConfigError that says what would fit
    if not plan.within_margin:
        print(
            f"warning: no configuration leaves the {plan.safety:.0%} safety margin; the chosen "
            "one fits the budget with less headroom (an out-of-memory error is possible)"
        )
    if "check" in result:
        check = result["check"]
        print(
            f"measured on {check['device']}: max_memory_reserved "
            f"{format_size(check['max_memory_reserved'])} (estimate error "
            f"{check['error']['reserved']:+.1%}), max_memory_allocated "
            f"{format_size(check['max_memory_allocated'])} (error "
            f"{check['error']['allocated']:+.1%}), device total "
            f"{format_size(check['device_total'])} (error {check['error']['total']:+.1%})"
        )
    return 0


def _check(config: Any, chosen: Any, probe: Any) -> dict[str, Any]:
    """Run the chosen configuration on the GPU; measured peaks and the estimate's errors."""
    import torch

    from partseg.errors import ConfigError
    from partseg.train.calibration import check_choice, estimate_errors
    from partseg.train.planner import apply_estimate, format_size

    _stderr(f"plan: running the chosen configuration on {probe.name}")
    try:
        peak, context = check_choice(apply_estimate(config, chosen), probe)
    except torch.OutOfMemoryError as err:
        raise ConfigError(
            f"the chosen configuration (core {'x'.join(map(str, chosen.core))}, batch "
            f"{chosen.batch_size}, estimated {format_size(chosen.total)}) ran out of memory on "
            f"{probe.name}: {str(err).splitlines()[0]}. Plan with a larger --safety, and report "
            "the estimate (partseg plan --json --no-verify)"
        ) from err
    return {
        "device": probe.name,
        "max_memory_allocated": peak.allocated,
        "max_memory_reserved": peak.reserved,
        "context": context,
        "device_total": peak.reserved + context,
        "error": estimate_errors(chosen, peak, context),
    }


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
