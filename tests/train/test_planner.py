"""Memory planner: sizes, linear activation model, fitting to a budget."""

from __future__ import annotations

import math

import pytest
import torch

from partseg.config import config_from_dict
from partseg.errors import ConfigError
from partseg.train.planner import (
    LiveBytes,
    apply_estimate,
    candidate_cores,
    fit_activations,
    measure_step,
    parse_size,
    plan_memory,
    require_fit,
)


def small_config(**train):
    return config_from_dict(
        {
            "model": {"in_channels": 2, "out_channels": 3, "depth": 3, "base_width": 4},
            "partition": {"core": [16, 16, 16], "margin": [4, 4, 4]},
            "train": {"batch_size": 2, **train},
        }
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GiB", 4 * 2**30),
        ("4GB", 4 * 10**9),
        ("4096MiB", 4 * 2**30),
        ("6g", 6 * 2**30),
        ("512m", 512 * 2**20),
        ("1.5GiB", 3 * 2**29),
        (100, 100),
    ],
)
def test_parse_size(text, expected) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["four", "4 parsecs", "", "-1GiB"])
def test_parse_size_rejects(text) -> None:
    with pytest.raises(ConfigError, match="4GiB"):
        parse_size(text)


def test_live_bytes_follows_frees() -> None:
    with LiveBytes() as tracker:
        a = torch.ones(1000)  # 4000 bytes
        b = a * 2
        del a
        c = torch.ones(10)
    assert tracker.peak == 8000
    assert tracker.live == 4000 + 40
    del b, c


@pytest.mark.parametrize("dims", [2, 3])
def test_activations_are_linear_in_voxels(dims: int) -> None:
    config = config_from_dict(
        {
            "model": {
                "spatial_dims": dims,
                "in_channels": 1,
                "out_channels": 2,
                "depth": 3,
                "base_width": 4,
            },
            "partition": {
                "spatial_dims": dims,
                "core": [16, 16] if dims == 2 else [8, 8, 8],
                "margin": 0,
            },
        }
    )
    act = fit_activations(config, "off", False)
    spatial = (24,) * dims
    measured = measure_step(config, spatial, (12,) * dims)
    assert act.peak(math.prod(spatial), 1) == pytest.approx(measured.peak, rel=0.02)
    assert act.saved(math.prod(spatial), 1) == pytest.approx(measured.saved, rel=0.02)


def test_mixed_precision_and_checkpointing_save_memory() -> None:
    config = small_config()
    fp32 = fit_activations(config, "off", False)
    bf16 = fit_activations(config, "bf16", False)
    ckpt = fit_activations(config, "off", True)
    assert bf16.saved_b < 0.7 * fp32.saved_b
    assert ckpt.saved_b < 0.7 * fp32.saved_b


def test_plan_shrinks_to_fit_and_applies() -> None:
    config = small_config()
    roomy = plan_memory(config, parse_size("1GiB"), device_type="cpu")
    assert roomy.chosen is not None
    assert roomy.chosen.core == (16, 16, 16) and roomy.chosen.batch_size == 2
    need = roomy.chosen.total
    tight = plan_memory(config, need // 3, device_type="cpu")
    assert tight.chosen is not None and tight.chosen.total <= need // 3
    assert tight.chosen.voxels_per_step < roomy.chosen.voxels_per_step
    applied = apply_estimate(config, tight.chosen)
    assert applied.partition.core == tight.chosen.core
    assert applied.train.batch_size == tight.chosen.batch_size
    assert applied.train.checkpointing == tight.chosen.checkpointing


def test_nothing_fits_says_what_would() -> None:
    plan = plan_memory(small_config(amp="off"), 1000, device_type="cpu", modes=[("off", True)])
    assert plan.chosen is None
    with pytest.raises(ConfigError, match=r"nothing fits .* needs .*--gpu-mem \d+MiB"):
        require_fit(plan)
    assert plan.smallest.core == (4, 4, 4)  # one stride of the depth-3 network per axis


def test_candidate_cores_keep_proportions() -> None:
    cores = candidate_cores(
        config_from_dict({"partition": {"core": [80, 96, 96]}, "model": {"depth": 4}})
    )
    assert cores[0] == (80, 96, 96) and cores[-1] == (8, 8, 8)
    assert all(c % 8 == 0 for core in cores for c in core)
    assert cores[1] in ((80, 88, 96), (80, 96, 88))


def test_plan_cli(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from pathlib import Path

    from partseg.cli import main

    config = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    assert main(["plan", config, "--gpu-mem", "1GiB", "--json", "--device-type", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["chosen"]["core"] == [8, 8, 8] and data["chosen"]["batch_size"] == 2
    assert data["chosen"]["total"] <= data["budget"]
    assert main(["plan", config, "--gpu-mem", "1KiB"]) == 2
    assert "nothing fits a budget of 1.00 KiB" in capsys.readouterr().err
