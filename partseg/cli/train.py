"""``partseg train CONFIG``: train one model into a run directory.

CONFIG is a training config (``configs/default.yaml``) or a recipe (a compare config such as
``configs/brats_3d_context.yaml``) with ``--variant NAME`` naming the variant to train (optional
when the recipe has one). The run directory receives the resolved ``config.yaml``,
``metrics.jsonl`` / ``metrics.csv``, ``checkpoints/last.pt`` and ``checkpoints/best.pt`` (see
:mod:`partseg.train.trainer`). ``--gpu-mem 4GiB`` lets the memory planner pick the largest core
/ batch (and mixed precision, checkpointing) that fits; ``key=value`` arguments override config
keys, e.g. ``train.epochs=20 data.store=brats.zarr``. For several GPUs or CPU processes launch
it with ``torchrun --nproc_per_node N -m partseg train CONFIG``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from partseg.config import ExperimentConfig

from partseg.cli.options import nonnegative_int


class IntermixedParser(argparse.ArgumentParser):
    """A parser whose ``key=value`` positionals may follow options (``CONFIG --out DIR a=b``).

    Plain argparse assigns the empty list to a ``nargs="*"`` positional when it first meets
    CONFIG, then rejects overrides after an option; intermixed parsing reads all positionals.
    """

    _inside = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def,override]
        if self._inside:  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    """The ``key=value`` positionals (``help`` gives the example), allowed after options."""
    p.__class__ = IntermixedParser
    p.add_argument("overrides", nargs="*", metavar="key=value", help=help)


def add_config(p: argparse.ArgumentParser) -> None:
    """The CONFIG positional (a YAML file or a built-in recipe's name) and ``--variant``."""
    p.add_argument(
        "config",
        type=Path,
        help="training config or recipe: a YAML file, e.g. configs/default.yaml or "
        "configs/brats_3d_context.yaml, or the name of a built-in one, e.g. tiny",
    )
    p.add_argument(
        "--variant",
        default=None,
        metavar="NAME",
        help="the variant of a recipe (a compare config with variants) to use (default: its "
        "only variant; required when it has several)",
    )


def load_run_config(args: argparse.Namespace, overrides: list[str]) -> tuple[ExperimentConfig, str]:
    """The experiment config CONFIG (and ``--variant``) name, and the default run name.

    The run name is the config's file stem, plus ``/<variant>`` for a recipe.
    """
    from partseg.experiments.config import load_training_config
    from partseg.recipes import resolve_config

    args.config = resolve_config(args.config)
    config, variant = load_training_config(args.config, overrides, variant=args.variant)
    name = args.config.stem if variant is None else f"{args.config.stem}/{variant}"
    return config, name


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg train``."""
    p = subparsers.add_parser(
        "train",
        help="train a 2D/3D U-Net on minicubes of an ingested store",
        description="Train a segmentation model from a YAML recipe (configs/*.yaml) with "
        "mixed precision, gradient checkpointing, stitched full-volume validation and exact "
        "resume.",
    )
    add_common_arguments(p)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (default: runs/<config name>[/<variant>], plus /fold_K with --fold)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from checkpoints/last.pt (default: start fresh)",
    )
    p.add_argument(
        "--fold",
        type=nonnegative_int,
        default=None,
        help="cross-validation fold to train, 0..data.folds-1 (default: data.fold of the "
        "config; sets data.folds=5 when the config has none)",
    )
    p.set_defaults(func=run)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """CONFIG, --gpu-mem and the key=value overrides, shared by train and cv."""
    add_config(p)
    add_overrides(
        p, "config overrides such as train.epochs=10 partition.core=[64,64,64] (default: none)"
    )
    p.add_argument(
        "--gpu-mem",
        default=None,
        metavar="SIZE",
        help="memory budget (4GiB, 4GB, 4096MiB, 6g): the planner picks core, batch, mixed "
        "precision and checkpointing to fit it (default: use the config as is)",
    )
    add_budget(p)


def duration(text: str) -> str:
    """An argparse type: a duration such as ``90s``, ``60m`` or ``1.5h`` (kept as written)."""
    from partseg.errors import ConfigError
    from partseg.train.budget import parse_duration

    try:
        parse_duration(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_budget(p: argparse.ArgumentParser) -> None:
    """``--budget DURATION``: train for a wall time of steps instead of a number of epochs."""
    p.add_argument(
        "--budget",
        type=duration,
        default=None,
        metavar="DURATION",
        help="wall time of training steps (90s, 60m, 1.5h; sets train.budget): the step time "
        "is measured and epochs x steps per epoch chosen to fill it; validation is not "
        "counted and is capped (default: train.budget of the config, else its epochs)",
    )


def budget_overrides(budget: str | None, overrides: list[str]) -> list[str]:
    """``--budget`` as a config override (after the others, so it wins)."""
    return [*overrides, f"train.budget={budget}"] if budget else list(overrides)


def fold_overrides(fold: int | None, overrides: list[str]) -> list[str]:
    """``--fold K`` as config overrides (``data.folds`` defaults to 5, as in the papers)."""
    if fold is None:
        return list(overrides)
    extra = [f"data.fold={fold}"]
    if not any(o.startswith("data.folds=") for o in overrides):
        extra.insert(0, "data.folds=5")
    return [*overrides, *extra]


def fit_to_budget(config, size: str, device_type: str, log=print):  # type: ignore[no-untyped-def]
    """Apply the memory planner's choice for a ``--gpu-mem`` budget and log it."""
    from partseg.train.planner import apply_estimate, parse_size, plan_memory, require_fit

    budget = parse_size(size)
    chosen = require_fit(plan_memory(config, budget, device_type=device_type))
    log(f"memory planner, budget {size}: chose\n{chosen.describe()}")
    return apply_estimate(config, chosen)


def run(args: argparse.Namespace) -> int:
    from partseg.errors import ConfigError
    from partseg.train.distributed import init_distributed, shutdown
    from partseg.train.trainer import train

    overrides = budget_overrides(args.budget, fold_overrides(args.fold, args.overrides))
    config, name = load_run_config(args, overrides)
    if args.fold is not None and config.data.folds and args.fold >= config.data.folds:
        raise ConfigError(f"--fold {args.fold} is outside 0..{config.data.folds - 1}")
    run_dir = args.out
    if run_dir is None:
        run_dir = Path("runs") / name
        if config.data.folds:
            run_dir = run_dir / f"fold_{config.data.fold}"
    ctx = init_distributed(config.train.device)
    try:
        if args.gpu_mem:
            log = print if ctx.is_main else (lambda _message: None)
            config = fit_to_budget(config, args.gpu_mem, ctx.device.type, log)
        train(config, run_dir, resume=args.resume, dist=ctx)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        print(f"run directory: {run_dir}")
    return 0
