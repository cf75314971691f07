"""The state of a training run: checkpoint payload, exact resume, in-memory snapshots.

:class:`TrainerState` gives :class:`~partseg.train.trainer.Trainer` its ``payload`` / ``save``
/ ``load``: a checkpoint carries what ``partseg predict`` needs (model config and weights,
partition, layout, classes, channels, label mapping, ingest settings, the resolved config) and
what an exact resume needs (optimizer, scaler, schedule, loss state, epoch, step, RNG states,
best record, and the budget plan of a ``train.budget`` run, so a resumed run keeps its planned
step count). :func:`take_snapshot` / :func:`restore_snapshot` keep the same training state in
memory, for steps that must leave no trace (the budget's step-time probe).

Example:
    >>> # trainer.save("last", record); Trainer(config, run_dir, resume=True).run()
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from partseg.checkpoint import FORMAT, VERSION, load_checkpoint, partition_to_dict, save_checkpoint
from partseg.errors import CheckpointError
from partseg.train.rng import rng_state, set_rng_state
from partseg.train.rundir import json_safe


class TrainerState:
    """Checkpoint writing and loading of a :class:`~partseg.train.trainer.Trainer`."""

    def payload(self, record: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint dict (see :mod:`partseg.checkpoint` for the keys)."""
        cfg = self.config
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_config": asdict(cfg.model),
            "model_state": self.model.state_dict(),
            "partition": partition_to_dict(self.partition),
            "layout": asdict(self.layout),
            "classes": list(self.store.classes),
            "channels": list(self.store.channels),
            "label_mapping": {str(k): int(v) for k, v in self.store.label_mapping.items()},
            "ingest": self.store.attrs.get("ingest"),  # so predict --input preprocesses alike
            "regions": self.regions.to_json() if self.regions is not None else None,
            "config": cfg.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "loss_state": self.loss_fn.state_dict(),
            "epoch": self.epoch - 1,
            "step": self.step,
            "rng": rng_state(),
            "sampler": {"epoch": self.epoch, "seed": cfg.train.seed, "kind": cfg.sampler.kind},
            "metrics": json_safe(record),
            "best": {**self.best, "since": self.since_best},
            "budget": None if self.budget is None else json_safe(self.budget.to_dict()),
        }

    def save(self, name: str, record: dict[str, Any]) -> None:
        """Atomically write ``checkpoints/<name>.pt``."""
        save_checkpoint(self.run_dir / "checkpoints" / f"{name}.pt", self.payload(record))

    def load(self, path: Path) -> None:
        """Restore the full training state from ``path`` (for ``--resume``).

        A budgeted run's plan comes back with it (:meth:`apply_budget`), whatever budget the
        resuming config asks for.
        """
        from partseg.train.budget import BudgetPlan

        if not path.is_file():
            raise CheckpointError(f"cannot resume: {path} does not exist (start without --resume)")
        payload = load_checkpoint(path, map_location=self.device)
        if payload.get("model_config") != asdict(self.config.model):
            raise CheckpointError(
                f"cannot resume from {path}: its model config differs from the given config; "
                "resume with the run's own config.yaml"
            )
        self.model.load_state_dict(payload["model_state"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        self.schedule.load_state_dict(payload["scheduler"])
        self.loss_fn.load_state_dict(payload["loss_state"])
        self.epoch = int(payload["epoch"]) + 1
        self.step = int(payload["step"])
        best = dict(payload["best"])
        self.since_best = int(best.pop("since", 0))
        self.best = best
        set_rng_state(payload["rng"])
        if payload.get("budget"):
            self.apply_budget(BudgetPlan.from_dict(payload["budget"]))
        if self.metrics is not None:
            self.metrics.resume(self.epoch, payload.get("metrics"))
        self.log(f"resumed from {path} after epoch {self.epoch} (step {self.step})")


def take_snapshot(trainer: Any) -> dict[str, Any]:
    """A deep copy of the trainer's training state (weights, optimizer, scaler, loss, RNGs)."""
    return copy.deepcopy(
        {
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "loss": trainer.loss_fn.state_dict(),
            "step": trainer.step,
            "rng": rng_state(),
        }
    )


def restore_snapshot(trainer: Any, snapshot: dict[str, Any]) -> None:
    """Put back the state of :func:`take_snapshot`; gradients are cleared."""
    trainer.model.load_state_dict(snapshot["model"])
    trainer.optimizer.load_state_dict(snapshot["optimizer"])
    trainer.scaler.load_state_dict(snapshot["scaler"])
    trainer.loss_fn.load_state_dict(snapshot["loss"])
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.step = snapshot["step"]
    set_rng_state(snapshot["rng"])


__all__: Sequence[str] = ("TrainerState", "restore_snapshot", "take_snapshot")
