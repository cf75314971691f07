"""Data-parallel training: synchronised BatchNorm, sharding, ``partseg train --nproc``.

The fast tests check the synchronised BatchNorm's maths in one process: two "processes" are
two halves of a batch whose ``reduce`` adds the other half's sums, which must equal plain
BatchNorm on the whole batch in the output, the gradients and the running statistics. The
end-to-end test trains 2 CPU processes (gloo) with batch b each and 1 process with batch 2b and
compares the weights.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from partseg.checkpoint import load_checkpoint
from partseg.cli import main
from partseg.models import build_model
from partseg.models.config import ModelConfig
from partseg.sampling import cycle, shard
from partseg.train.syncnorm import (
    SyncBatchNorm,
    batch_sums,
    convert_sync_batchnorm,
    has_batchnorm,
)

_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


@pytest.mark.parametrize("ndim", [2, 3])
def test_sync_batchnorm_of_two_halves_equals_batchnorm_of_the_batch(ndim: int) -> None:
    torch.manual_seed(0)
    plain = _BN[ndim](3)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    spatial = (5,) * ndim
    x = torch.randn(6, 3, *spatial) * 2 + 1  # mean 1, sd 2: a one-pass variance must hold up
    xa = x[:2].clone().requires_grad_()
    xb = x[2:].clone().requires_grad_()  # halves of different sizes: the counts weigh them
    a = SyncBatchNorm.from_batchnorm(copy.deepcopy(plain))
    b = SyncBatchNorm.from_batchnorm(copy.deepcopy(plain))
    a.reduce = lambda sums: sums + batch_sums(xb)  # "process a" receives b's sums ...
    b.reduce = lambda sums: sums + batch_sums(xa)  # ... and b receives a's
    out = torch.cat([a(xa), b(xb)])
    whole = x.clone().requires_grad_()
    expected = plain(whole)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(2))  # any loss
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(torch.cat([xa.grad, xb.grad]), whole.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a.weight.grad + b.weight.grad, plain.weight.grad)
    torch.testing.assert_close(a.bias.grad + b.bias.grad, plain.bias.grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(a, name), getattr(plain, name))


def test_one_process_and_eval_mode_are_plain_batchnorm() -> None:
    torch.manual_seed(1)
    plain = nn.BatchNorm3d(2, momentum=None)  # the cumulative average too
    synced = SyncBatchNorm.from_batchnorm(copy.deepcopy(plain))  # no process group: no reduce
    for _ in range(3):
        x = torch.randn(4, 2, 3, 3, 3)
        torch.testing.assert_close(synced(x), plain(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(synced.running_var, plain.running_var)
    synced.eval(), plain.eval()
    synced.reduce = _never  # eval mode communicates nothing (validation runs on rank 0 only)
    x = torch.randn(1, 2, 3, 3, 3)
    torch.testing.assert_close(synced(x), plain(x))


def _never(_sums: torch.Tensor) -> torch.Tensor:
    raise AssertionError("eval mode must not reduce")


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_conversion_keeps_names_so_checkpoints_load_into_the_plain_model(spatial_dims) -> None:
    config = ModelConfig(spatial_dims=spatial_dims, in_channels=2, out_channels=3, depth=2,
                         base_width=4, norm="batch")  # fmt: skip
    model = build_model(config)
    plain_keys = list(model.state_dict())
    weight = next(model.parameters())
    converted = convert_sync_batchnorm(model, "cpu")
    assert converted is model and next(model.parameters()) is weight  # in place, shared
    kinds = {type(m) for m in model.modules()}
    assert SyncBatchNorm in kinds and not kinds & {nn.BatchNorm2d, nn.BatchNorm3d}
    assert list(model.state_dict()) == plain_keys
    fresh = build_model(config)
    fresh.load_state_dict(model.state_dict())  # what single-process predict does
    assert has_batchnorm(fresh)
    assert not has_batchnorm(
        build_model(ModelConfig(spatial_dims=3, norm="instance", in_channels=1, out_channels=2))
    )


def test_shards_of_the_cycled_epoch_are_the_global_batches() -> None:
    samples = list("abcdefg")  # 7 samples, 2 steps of global batch 4 need 8: cycled first
    one = cycle(samples, 8)
    ranks = [shard(cycle(samples, 8), r, 2) for r in range(2)]
    for step in range(2):
        global_batch = one[4 * step : 4 * step + 4]
        local = [x for r in ranks for x in r[2 * step : 2 * step + 2]]
        assert sorted(local) == sorted(global_batch)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model_state"]


@pytest.mark.slow  # ~25 s: three interpreters start (torch.distributed.run and 2 workers)
def test_two_cpu_processes_train_like_one_with_the_global_batch(
    store: str, tiny_yaml: Path, tmp_path: Path, capsys
) -> None:
    args = [str(tiny_yaml), f"data.store={store}", "train.val_every=0", "--no-progress"]
    assert main(["train", *args, "train.batch_size=4", "--out", str(tmp_path / "one")]) == 0
    log = capsys.readouterr().out
    assert "batch 4 per process x 1 accumulated x 1 process(es) = global batch 4" in log
    two = tmp_path / "two"
    command = [sys.executable, "-m", "partseg", "train", *args, "train.batch_size=2",
               "--nproc", "2", "--out", str(two)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "global batch 4" in done.stdout and "BatchNorm synchronised across 2" in done.stderr
    one, both = _weights(tmp_path / "one"), _weights(two)
    assert one.keys() == both.keys()
    worst = max((one[k].double() - both[k].double()).abs().max().item() for k in one)
    assert worst <= 1e-5, worst
