"""Building what a training run needs: runtime flags, store and split, model, loss, optimizer.

:class:`TrainerSetup` gives :class:`~partseg.train.trainer.Trainer` its setup steps, each a small
method that sets attributes the loop reads:

* :meth:`~TrainerSetup.setup_runtime`: seeds, deterministic algorithms, cuDNN autotuning;
* :meth:`~TrainerSetup._setup_data`: store (checked against the config), partition, layout,
  derived channels, split, sampler;
* :meth:`~TrainerSetup._setup_model`: model, gradient checkpointing, DDP wrap, loss, optimizer,
  precision and scaler, the validation predictor, the learning-rate schedule.

:mod:`partseg.train.steps` reuses ``setup_runtime`` and ``_setup_model`` to time the trainer's
own steps without a store.

Example:
    >>> import torch
    >>> build_optimizer(torch.nn.Linear(2, 2), OptimConfig(name="sgd")).defaults["nesterov"]
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from partseg.config import OptimConfig
from partseg.errors import ConfigError
from partseg.precision import resolve_precision
from partseg.train import distributed as ddp
from partseg.train.rng import seed_everything
from partseg.train.schedule import LrSchedule
from partseg.train.splits import resolve_split


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with (Nesterov) momentum, over the model's parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(
        params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay
    )


class TrainerSetup:
    """The setup steps of a :class:`~partseg.train.trainer.Trainer` (see the module docstring)."""

    def setup_runtime(self) -> None:
        """Seeds, deterministic algorithms and cuDNN autotuning, as every training run sets
        them (:mod:`partseg.train.steps` reuses this for measured steps)."""
        cfg = self.config
        seed_everything(cfg.train.seed)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = not cfg.train.deterministic

    def _setup_data(self) -> None:
        from partseg.channels import build_derive
        from partseg.sampling import make_sampler
        from partseg.store.zarrstore import open_store
        from partseg.train.planner import shrink_core_to_data

        cfg = self.config
        if not cfg.data.store:
            raise ConfigError("data.store is not set; pass data.store=PATH_OR_URL")
        self.store = open_store(cfg.data.store)
        self.config = cfg = shrink_core_to_data(cfg, self.store, self.log)
        self.derive = build_derive(cfg.data.derived_channels)  # None without derived channels
        self.partition = cfg.partition.build(cfg.model.total_stride)
        self.layout = cfg.partition.layout()
        for note in self.partition.notes:
            self.log(f"partition: {note}")
        self._check_store()
        # rank 0 reads or writes RUN/splits.json; the others draw the same seeded folds
        split_dir = self.run_dir if self.dist.is_main else None
        split = resolve_split(cfg.data, self.store.case_ids, split_dir)
        self.train_cases = split["train"]
        self.val_cases = split["val"][: cfg.data.max_val_cases or None]
        self.unvalidated = split["val"][len(self.val_cases) :]  # neither trained nor validated
        if not self.train_cases:
            raise ConfigError(f"no training cases left in {cfg.data.store} after the split")
        self.sampler = make_sampler(
            cfg.sampler, self.store, self.partition, self.train_cases, seed=cfg.train.seed
        )
        self.core_slices = self.layout.core_slices(self.partition.at((0, 0, 0)))

    def _check_store(self) -> None:
        """In/out channels from the store where unset; every mismatch in one ConfigError."""
        from partseg.config import fit_to_store

        self.config = fit_to_store(self.config, self.store)
        self.regions = self.store.regions

    def _setup_model(self) -> None:
        from partseg.losses import DeepSupervisionLoss
        from partseg.models import build_model

        cfg = self.config
        self.model = build_model(cfg.model).to(self.device)
        self.model.set_grad_checkpointing(cfg.train.checkpointing)
        self.net = ddp.wrap_model(self.model, self.dist, sync_batchnorm=cfg.train.sync_batchnorm)
        loss_fn = cfg.loss.build(self.regions.labels if self.regions is not None else None)
        if cfg.model.deep_supervision:
            loss_fn = DeepSupervisionLoss(loss_fn)
        self.loss_fn = loss_fn.to(self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.amp = resolve_precision(cfg.train.amp, self.device, key="train.amp")
        self.scaler = self.amp.scaler()
        self.val_predictor = self._val_predictor()
        self.schedule = LrSchedule(self.optimizer, cfg.schedule, cfg.train.epochs)
        self.log(
            f"model {cfg.model.name} ({self.model.num_parameters():,} parameters), input "
            f"{self.layout.spatial_size(self.partition)}, core {self.partition.core}, "
            f"batch {cfg.train.batch_size} per process x {cfg.train.accumulate} accumulated x "
            f"{self.dist.world_size} process(es) = global batch "
            f"{cfg.train.batch_size * cfg.train.accumulate * self.dist.world_size}, "
            f"amp={self.amp.mode}, "
            f"checkpointing={'on' if cfg.train.checkpointing else 'off'}, device={self.device}; "
            f"{len(self.train_cases)} training / "
            f"{len(self.val_cases)} validation cases"
        )
        if self.unvalidated and not cfg.data.folds:  # a fold's cases are held out by design
            drawn = len(self.val_cases) + len(self.unvalidated)
            self.log(
                f"note: data.max_val_cases={cfg.data.max_val_cases} validates "
                f"{len(self.val_cases)} of the {drawn} validation cases; the other "
                f"{len(self.unvalidated)} take no part in training either (list fewer "
                "data.val_cases, or raise data.max_val_cases)"
            )

    def _val_predictor(self) -> Any:
        """The prediction pipeline of validation: this model, training's geometry and precision."""
        from partseg.infer.pipeline import CasePredictor
        from partseg.infer.settings import PredictSettings

        settings = PredictSettings(
            batch_size=self.config.train.val_batch_size,
            device=str(self.device),
            precision=self.amp.mode,
        )
        return CasePredictor.from_model(
            self.model, self.partition, self.layout, settings, derive=self.derive, log=self.log,
            regions=self.regions,
        )  # fmt: skip


__all__: Sequence[str] = ("TrainerSetup", "build_optimizer")
