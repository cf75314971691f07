"""The training loop: one :class:`Trainer` with small named steps.

The loop has the shape of nnU-Net's ``run_training``::

    trainer.setup()                               # build; resume, or plan a time budget
    for epoch in range(trainer.epoch, epochs):
        record = trainer.train_epoch(epoch)       # sampled minicubes -> train_step x N
        record |= trainer.validate(epoch)         # stitched full-volume Dice of val cases
        trainer.end_epoch(epoch, record)          # schedule, adaptive loss, log, checkpoints
        if trainer.maybe_stop(epoch):             # early stopping
            break

Everything comes from the :class:`~partseg.config.ExperimentConfig`; nothing is subclassed per
hyperparameter. Mixed precision has one code path (``autocast`` + ``GradScaler``, both no-ops
when off); gradient checkpointing is the model's per-stage switch.

The pieces around the loop live beside it: :mod:`partseg.train.setup` (runtime flags, store,
split, model, loss, optimizer: :class:`~partseg.train.setup.TrainerSetup`),
:mod:`partseg.train.state` (checkpoint payload and exact resume:
:class:`~partseg.train.state.TrainerState`), :mod:`partseg.train.budget` (a wall-time budget
instead of epochs), :mod:`partseg.train.validation` (stitched validation and its loss),
:mod:`partseg.train.rundir` (metrics logs, JSON summaries), :mod:`partseg.train.rng` (seeding,
RNG state for exact resume); ``MetricsLog``, ``build_optimizer``, ``stitched_logits`` and
``validation_loss`` are re-exported here.

**Time budget.** With ``train.budget`` (``90s``, ``60m``, ``1.5h``) the run measures its own
step time before epoch 0 and replaces ``epochs`` / ``steps_per_epoch`` / ``val_every`` by a
plan that fills the budget with training steps (validation not counted, capped);
``RUN/budget.json`` and every checkpoint keep the plan, so a resumed run keeps its step count
(see :mod:`partseg.train.budget`).

Run directory layout::

    RUN/config.yaml            the resolved config (as requested: a budget, not its plan)
    RUN/budget.json            the budget's measured step time and plan (train.budget only)
    RUN/splits.json            the cross-validation folds (when data.folds > 0)
    RUN/metrics.jsonl, .csv    one record per epoch
    RUN/checkpoints/last.pt    after every epoch (full training state, for --resume)
    RUN/checkpoints/best.pt    the best validation Dice so far (lowest train loss without val)
    RUN/summary.json           best and last records when training ends
    RUN/tensorboard/           event files, when tensorboard is installed
    RUN/.partseg.lock          while a process trains into RUN (a second one is refused)

Each epoch ends with its metrics record, then ``best.pt``, then ``last.pt``: a kill or a full
disk at any point loses nothing, since a resume from ``last.pt`` redoes any later epoch exactly
(see :mod:`partseg.train.rundir`).

**Exact resume.** Sampling and augmentation are deterministic in ``(seed, epoch)``; the model,
optimizer, scaler, schedule, loss state and the torch / numpy / python RNG states are saved at
every epoch end. A run resumed from ``last.pt`` ends with the same weights (on CPU, bit for bit)
as an uninterrupted one.

Example:
    >>> # from partseg.config import load_config
    >>> # Trainer(load_config("configs/tiny.yaml", ["data.store=s.zarr"]), "runs/a").run()
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from partseg.config import ExperimentConfig, save_config
from partseg.devices import resolve_device
from partseg.errors import ConfigError, TrainingError
from partseg.locking import run_lock
from partseg.train import distributed as ddp
from partseg.train.rundir import MetricsLog, check_writable, clean_run_temps, write_run_json
from partseg.train.setup import TrainerSetup, build_optimizer
from partseg.train.state import TrainerState
from partseg.train.validation import stitched_logits, validate_cases, validation_loss

if TYPE_CHECKING:
    from partseg.train.budget import BudgetPlan


def compute_loss(
    loss_fn: nn.Module,
    output: torch.Tensor | list[torch.Tensor],
    target: torch.Tensor,
    mask: torch.Tensor,
    core: tuple[slice, ...],
) -> torch.Tensor:
    """The loss on the core of a network output.

    A single output (B, K, *input) is cropped to the core (B, K, *core), where target and mask
    (B, *core) live. A deep-supervision list [full, 1/2, ...] keeps its input size; target and
    mask are placed into the core of input-sized tensors whose margin is masked out, so the
    wrapped loss can resize them to every level.
    """
    if isinstance(output, torch.Tensor):
        return loss_fn(output[(slice(None), slice(None), *core)], target, mask)
    spatial = tuple(output[0].shape[2:])
    full_target = target.new_zeros((target.shape[0], *spatial))  # (B, *input)
    full_mask = mask.new_zeros((mask.shape[0], *spatial))
    full_target[(slice(None), *core)] = target
    full_mask[(slice(None), *core)] = mask
    return loss_fn(output, full_target, full_mask)


class Trainer(TrainerSetup, TrainerState):
    """Trains one model from an :class:`ExperimentConfig` into a run directory.

    Args:
        config: the validated experiment.
        run_dir: where config, metrics and checkpoints go.
        resume: continue from ``run_dir/checkpoints/last.pt``.
        dist: the DDP context from :func:`partseg.train.distributed.init_distributed`
            (default: single process on ``train.device``).
        log: where rank 0's progress lines go.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: str | os.PathLike,
        *,
        resume: bool = False,
        dist: ddp.DistContext | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.dist = dist or ddp.DistContext(
            device=resolve_device(config.train.device, key="train.device")
        )
        self.device = self.dist.device
        self._log = log
        self.epoch = 0
        self.step = 0
        self.best: dict[str, Any] = {"value": None, "epoch": None, "metric": None}
        self.since_best = 0
        self.budget: BudgetPlan | None = None
        self.regions: Any = None  # the store's region-based labels (one sigmoid output each)

    # ---------------------------------------------------------------------------- setup
    def log(self, message: str) -> None:
        if self.dist.is_main:
            self._log(message)

    def setup(self) -> None:
        """Open the store, check it against the config, build everything, maybe resume."""
        cfg = self.config  # config.yaml keeps the request; a core fitted to the data is logged
        self.setup_runtime()
        if self.dist.is_main:
            check_writable(self.run_dir)
            clean_run_temps(self.run_dir)
        self._setup_data()
        self._setup_model()
        self.metrics = MetricsLog(self.run_dir) if self.dist.is_main else None
        last = self.run_dir / "checkpoints" / "last.pt"
        if self.resume:
            self.load(last)
        elif last.is_file():
            raise ConfigError(
                f"{self.run_dir} already holds a training run (checkpoints/last.pt); pass "
                "--resume to continue it or choose another --out"
            )
        else:
            if self.metrics is not None:
                self.metrics.resume(0)  # a fresh run: drop lines of an attempt without one
            if cfg.train.budget:
                self.plan_budget()
        if self.dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")

    def plan_budget(self) -> None:
        """Measure the step time and apply the plan of ``train.budget`` (rank 0's, on DDP)."""
        from partseg.train.budget import make_plan

        self._adopt_budget(make_plan(self, self.config.train.budget))

    def recalibrate_budget(self, first_epoch_s: float) -> None:
        """Set the remaining epochs from the first epoch's time (rank 0's, on DDP)."""
        from partseg.train.budget import recalibrate

        assert self.budget is not None
        self._adopt_budget(recalibrate(self.budget, first_epoch_s))

    def _adopt_budget(self, plan: BudgetPlan) -> None:
        """Rank 0's plan on every rank: applied, logged and written to ``RUN/budget.json``."""
        from partseg.train.budget import BudgetPlan

        plan = BudgetPlan.from_dict(ddp.broadcast_object(self.dist, plan.to_dict()))
        self.apply_budget(plan)
        self.log(plan.describe())
        if self.dist.is_main:
            write_run_json(self.run_dir / "budget.json", plan.to_dict())

    def apply_budget(self, plan: BudgetPlan) -> None:
        """Train for the plan's epochs, steps per epoch and validation cadence."""
        train = dataclasses.replace(
            self.config.train,
            epochs=plan.epochs,
            steps_per_epoch=plan.steps_per_epoch,
            val_every=plan.val_every,
        )
        self.config = dataclasses.replace(self.config, train=train)
        self.schedule.epochs = plan.epochs
        self.budget = plan

    def epoch_steps(self) -> int:
        """Optimizer steps of one epoch as configured (the sampler's epoch when 0)."""
        train = self.config.train
        if train.steps_per_epoch:
            return train.steps_per_epoch
        batches = math.ceil(len(self.epoch_samples(0)) * train.reuse / train.batch_size)
        return max(1, math.ceil(batches / train.accumulate))

    # ---------------------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        """Train to the end (or early stop); returns ``{"best": ..., "last": record}``.

        Rank 0 holds the run directory's lock (:mod:`partseg.locking`) throughout.
        """
        with run_lock(self.run_dir, "train") if self.dist.is_main else nullcontext():
            return self._run()

    def _run(self) -> dict[str, Any]:
        self.setup()
        record: dict[str, Any] = {}
        epoch = self.epoch
        while epoch < self.config.train.epochs:  # a budget may change it after the first
            record = self.train_epoch(epoch)
            if epoch == 0 and self.budget is not None and self.budget.first_epoch_s is None:
                self.recalibrate_budget(record["time_s"])
            record |= self.validate(epoch)
            self.end_epoch(epoch, record)
            if self.maybe_stop(epoch):
                break
            epoch += 1
        return self.finish(record)

    def epoch_samples(self, epoch: int, steps: int | None = None) -> list[Any]:
        """This rank's samples of ``epoch``, cycled or cut to ``steps`` optimizer steps
        (default ``steps_per_epoch``; 0: the sampler's epoch as it is)."""
        train, rank, world = self.config.train, self.dist.rank, self.dist.world_size
        steps = train.steps_per_epoch if steps is None else steps
        if not steps:
            return self.sampler.epoch(epoch, rank, world)
        items = steps * train.accumulate * train.batch_size
        needed = -(-items // train.reuse)  # per rank; the epoch list is cycled before sharding
        return self.sampler.epoch(epoch, rank, world, length=needed * world)

    def loader(self, epoch: int, steps: int | None = None) -> torch.utils.data.DataLoader:
        """The data loader of ``epoch``, of ``steps`` optimizer steps (:meth:`epoch_samples`)."""
        from partseg.dataset import MinicubeDataset

        cfg = self.config
        steps = cfg.train.steps_per_epoch if steps is None else steps
        dataset: torch.utils.data.Dataset = MinicubeDataset(
            cfg.data.store,
            self.epoch_samples(epoch, steps),
            self.layout,
            cfg.augment,
            seed=cfg.train.seed,
            reuse=cfg.train.reuse,
            epoch=epoch,
            derive=self.derive,
        )
        if steps:
            items = steps * cfg.train.accumulate * cfg.train.batch_size
            dataset = torch.utils.data.Subset(dataset, range(items))
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=cfg.train.batch_size,
            shuffle=False,  # the sampler's order is already random and seeded
            num_workers=cfg.train.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.train.seed + epoch),
        )

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the epoch's minicubes; returns the epoch's training record."""
        from partseg.progress import Progress

        train = self.config.train
        self.net.train()
        lr = self.schedule.start_epoch(epoch)
        loader = self.loader(epoch)
        bar = Progress(len(loader), f"epoch {epoch + 1}/{train.epochs}", unit="step",
                       enabled=self.dist.is_main and train.progress, final=False)  # fmt: skip
        start, total, count = time.perf_counter(), 0.0, 0
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(loader):
            last_micro = (i + 1) % train.accumulate == 0 or i + 1 == len(loader)
            total += self.train_step(batch, sync=last_micro)
            count += 1
            if last_micro:
                self.optimizer_step()
            seen = count * train.batch_size * self.dist.world_size
            speed = seen / (time.perf_counter() - start)
            bar.update(note=f"loss {total / count:.4f}, {speed:.1f} minicubes/s")
        bar.close()
        elapsed = time.perf_counter() - start
        loss = ddp.all_reduce_mean(self.dist, total / max(count, 1))
        return {
            "epoch": epoch + 1,  # epochs count from 1 in records and on the console
            "step": self.step,
            "lr": lr,
            "train_loss": loss,
            "time_s": round(elapsed, 3),
            "minicubes_per_s": round(count * train.batch_size * self.dist.world_size / elapsed, 3),
        }

    def train_step(self, batch: dict[str, Any], *, sync: bool = True) -> float:
        """Forward and backward of one batch (gradients accumulate); returns its loss."""
        image = batch["image"].to(self.device, non_blocking=True)  # (B, C', *input)
        target = batch["target"].to(self.device, non_blocking=True)  # (B, *core) int64
        mask = batch["mask"].to(self.device, non_blocking=True)  # (B, *core) bool
        skip_sync = self.dist.distributed and not sync
        with self.net.no_sync() if skip_sync else nullcontext():  # type: ignore[operator]
            with self.amp.autocast():
                output = self.net(image)  # (B, K, *input) or [full, 1/2, ...]
            loss = compute_loss(self.loss_fn, output, target, mask, self.core_slices)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(
                    f"the loss became {value} at step {self.step} (cases "
                    f"{list(batch['case_id'])}); training stopped, the last good checkpoint "
                    f"{self.run_dir / 'checkpoints' / 'last.pt'} is kept. Lower optim.lr, "
                    "set train.clip_grad, or try train.amp=off"
                )
            self.scaler.scale(loss / self.config.train.accumulate).backward()
        return value

    def optimizer_step(self) -> None:
        """Unscale, clip, step (skipped by the scaler on inf/NaN fp16 gradients), zero."""
        clip = self.config.train.clip_grad
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def validate(self, epoch: int) -> dict[str, Any]:
        """Stitched full-volume inference of the validation cases and their real Dice.

        Rank 0 predicts every case; the others wait and receive its record.
        """
        every = self.config.train.val_every
        last = epoch + 1 == self.config.train.epochs
        if not self.val_cases or not every or ((epoch + 1) % every and not last):
            return {}
        record: dict[str, Any] = {}
        if self.dist.is_main:
            record = validate_cases(
                self.val_predictor,
                self.store,
                self.val_cases,
                self.loss_fn,
                report=self.run_dir / "validation.json",
            )
        return ddp.broadcast_object(self.dist, record)

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Adaptive loss weights, schedule, best tracking, checkpoints and the metrics line."""
        weights = self._loss_end_epoch()
        if weights:
            record["loss_weights"] = weights
        self.schedule.observe(record.get("val_dice"))
        metric, value = self._monitored(record)
        improved = self.best["value"] is None or value > self.best["value"]
        if improved:
            self.best = {"value": value, "epoch": epoch + 1, "metric": metric}
            self.since_best = 0
        elif metric == "val_dice" and "val_dice" in record:
            self.since_best += 1
        self.epoch = epoch + 1
        if self.dist.is_main:  # record, best, last: a crash in between loses nothing
            assert self.metrics is not None
            self.metrics.append(record)
            if improved:
                self.save("best", record)
            self.save("last", record)
            shown = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in record.items()
                if k in ("epoch", "lr", "train_loss", "val_loss", "val_dice", "time_s")
            )
            self.log(f"epoch {epoch + 1}/{self.config.train.epochs}: {shown}")

    def _monitored(self, record: dict[str, Any]) -> tuple[str, float]:
        if self.val_cases and self.config.train.val_every:
            if "val_dice" in record:
                return "val_dice", float(record["val_dice"])
            return "val_dice", -math.inf  # not validated this epoch: never the best
        return "-train_loss", -float(record["train_loss"])

    def _loss_end_epoch(self) -> dict[str, float] | None:
        from partseg.losses import AdaptiveTverskyCELoss

        for module in self.loss_fn.modules():
            if isinstance(module, AdaptiveTverskyCELoss):
                ddp.all_reduce_sum_(self.dist, module.sums)
                ddp.all_reduce_sum_(self.dist, module.count)
        end = getattr(self.loss_fn, "end_epoch", None)
        return end() if callable(end) else None

    def maybe_stop(self, epoch: int) -> bool:
        """True after ``early_stop_patience`` validations without a better Dice."""
        patience = self.config.train.early_stop_patience
        if patience and self.since_best >= patience:
            self.log(
                f"early stop after epoch {epoch + 1}: no better {self.best['metric']} for "
                f"{self.since_best} validations (best {self.best['value']:.4f} at epoch "
                f"{self.best['epoch']})"
            )
            return True
        return False

    def finish(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write ``summary.json`` (rank 0) and return it."""
        best_record = {}
        if self.dist.is_main and self.metrics is not None:
            best_record = next(
                (r for r in self.metrics.records if r["epoch"] == self.best["epoch"]), {}
            )
        summary = {"best": {**self.best, "record": best_record}, "last": record}
        if self.dist.is_main:
            write_run_json(self.run_dir / "summary.json", summary)
            if self.metrics is not None:
                self.metrics.close()
        ddp.barrier(self.dist)
        return summary


def train(
    config: ExperimentConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    dist: ddp.DistContext | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train one run; see :class:`Trainer`."""
    return Trainer(config, run_dir, resume=resume, dist=dist, log=log).run()


__all__: Sequence[str] = (
    "MetricsLog",
    "Trainer",
    "TrainingError",
    "build_optimizer",
    "compute_loss",
    "stitched_logits",
    "train",
    "validation_loss",
)
