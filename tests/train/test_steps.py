"""Measured training steps run the trainer's own setup and step code on a synthetic batch."""

from __future__ import annotations

import math

import pytest
import torch

from partseg.config import config_from_dict
from partseg.models.checkpointing import Stage
from partseg.train.steps import run_steps, step_trainer, synthetic_batch
from partseg.train.trainer import Trainer


def config(dims: int, **train):
    partition = {"core": [8, 8, 8], "margin": [4, 4, 4]}
    if dims == 2:
        partition = {"spatial_dims": 2, "core": [16, 16], "margin": 0, "context_slices": 1}
    return config_from_dict(
        {
            "model": {"spatial_dims": dims, "in_channels": 3 if dims == 2 else 1,
                      "out_channels": 3, "depth": 2, "base_width": 4},
            "partition": partition,
            "train": {"batch_size": 2, "amp": "off", **train},
        }
    )  # fmt: skip


@pytest.mark.parametrize("dims", [2, 3])
def test_synthetic_batch_has_the_loader_shapes(dims: int) -> None:
    trainer = step_trainer(config(dims), "cpu")
    batch = synthetic_batch(trainer)
    spatial = (16, 16) if dims == 2 else (16, 16, 16)
    core = (16, 16) if dims == 2 else (8, 8, 8)
    assert batch["image"].shape == (2, 3 if dims == 2 else 1, *spatial)
    assert batch["target"].shape == (2, *core) and batch["target"].dtype == torch.int64
    assert batch["mask"].shape == (2, *core) and bool(batch["mask"].all())
    assert int(batch["target"].max()) < 3


@pytest.mark.parametrize("deterministic", [False, True])
def test_step_trainer_is_set_up_as_the_trainer_sets_itself_up(deterministic: bool) -> None:
    previous = torch.backends.cudnn.benchmark
    try:
        trainer = step_trainer(config(3, checkpointing=True, deterministic=deterministic), "cpu")
        assert torch.backends.cudnn.benchmark is (not deterministic)
    finally:
        torch.backends.cudnn.benchmark = previous
        torch.use_deterministic_algorithms(False)
    assert isinstance(trainer, Trainer)
    assert trainer.amp.mode == "off" and not trainer.scaler.is_enabled()
    assert all(s.checkpointing for s in trainer.model.modules() if isinstance(s, Stage))


def test_run_steps_uses_the_trainers_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"train_step": 0, "optimizer_step": 0}
    for name in calls:
        original = getattr(Trainer, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Trainer, name, counted)
    stats = run_steps(config(3, amp="bf16"), 3, "cpu")
    assert calls == {"train_step": 3, "optimizer_step": 3}
    assert len(stats.step_s) == len(stats.cpu_s) == len(stats.losses) == 3
    assert all(math.isfinite(v) for v in stats.losses)
    assert stats.losses[-1] != stats.losses[0]  # the optimizer stepped
    assert stats.max_reserved is None and stats.device_used is None  # a CPU has no CUDA stats
    assert stats.as_dict()["median_step_s"] == round(stats.median_step_s, 4)
