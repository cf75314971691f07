"""Learning-rate schedules stepped once per epoch: poly, cosine, reduce-on-plateau, constant.

One small class with a plain ``state_dict`` (numbers only, so checkpoints load with
``weights_only=True``) replaces torch's scheduler zoo: the learning rate of epoch ``e`` is
``base_lr * warmup(e) * shape(e) * plateau_scale``.

* poly (nnU-Net): ``(1 - e / E) ** power``
* cosine: ``min_lr + (base - min_lr) * (1 + cos(pi e / E)) / 2``, as a factor of ``base_lr``
* plateau: the factor is multiplied by ``factor`` after ``patience`` validations without
  improvement of the monitored metric (higher is better), never below ``min_lr``
* warm-up: linear ``(e + 1) / (warmup + 1)`` for the first ``warmup_epochs``.

Example:
    >>> import torch
    >>> from partseg.config import ScheduleConfig
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = LrSchedule(opt, ScheduleConfig("poly", power=1.0), epochs=4)
    >>> [round(sched.lr_at(e), 2) for e in range(4)]
    [1.0, 0.75, 0.5, 0.25]
"""

from __future__ import annotations

import math
from typing import Any

import torch

from partseg.config import ScheduleConfig


class LrSchedule:
    """Sets the optimizer's learning rate at the start of every epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: ScheduleConfig, epochs: int):
        self.optimizer = optimizer
        self.config = config
        self.epochs = epochs
        self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, self.base_lrs, strict=True):
            group["initial_lr"] = lr
        self.scale = 1.0
        self.best: float | None = None
        self.bad = 0

    def factor(self, epoch: int) -> float:
        """The multiplier of ``base_lr`` at ``epoch`` (0-based)."""
        cfg = self.config
        warm = min(1.0, (epoch + 1) / (cfg.warmup_epochs + 1)) if cfg.warmup_epochs else 1.0
        span = max(1, self.epochs - cfg.warmup_epochs)
        t = min(1.0, max(0, epoch - cfg.warmup_epochs) / span)
        if cfg.name == "poly":
            shape = (1.0 - t) ** cfg.power
        elif cfg.name == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * t))
        else:
            shape = 1.0
        return warm * shape * self.scale

    def lr_at(self, epoch: int, group: int = 0) -> float:
        base = self.base_lrs[group]
        lr = base * self.factor(epoch)
        if self.config.name == "cosine":
            lr = self.config.min_lr + (base - self.config.min_lr) * self.factor(epoch)
        return max(lr, self.config.min_lr) if self.config.name == "plateau" else lr

    def start_epoch(self, epoch: int) -> float:
        """Set the learning rate for ``epoch``; returns that of the first parameter group."""
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.lr_at(epoch, i)
        return self.optimizer.param_groups[0]["lr"]

    def observe(self, metric: float | None) -> None:
        """Report a validation metric (higher is better); only ``plateau`` reacts."""
        if self.config.name != "plateau" or metric is None or math.isnan(metric):
            return
        if self.best is None or metric > self.best:
            self.best, self.bad = metric, 0
            return
        self.bad += 1
        if self.bad > self.config.patience:
            self.scale *= self.config.factor
            self.bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.best = None if state["best"] is None else float(state["best"])
        self.bad = int(state["bad"])
