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
    assert main(["plan", config, "--gpu-mem", "1GiB", "--json", "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["chosen"]["core"] == [8, 8, 8] and data["chosen"]["batch_size"] == 2
    assert data["chosen"]["total"] <= data["budget"]
    assert main(["plan", config, "--gpu-mem", "1KiB"]) == 2
    assert "nothing fits a budget of 1.00 KiB" in capsys.readouterr().err


# -- safety margin, headroom and GPU calibration against a fake device -------------------------


class FakeGpu:
    """A device whose steps hold ``fixed + per_voxel * batch * input voxels`` allocated bytes and
    reserve 20% more plus 8 MiB; its context is 300 MiB. Records every configuration it ran."""

    name = "FakeGPU 4GB"

    def __init__(self, per_voxel: float = 3000.0, fixed: int = 64 * 2**20) -> None:
        self.per_voxel, self.fixed = per_voxel, fixed
        self.runs: list = []

    def allocated(self, config) -> int:
        from partseg.train.steps import input_voxels

        return int(self.fixed + self.per_voxel * config.train.batch_size * input_voxels(config))

    def context_bytes(self) -> int:
        return 300 * 2**20

    def peak(self, config, steps: int):
        from partseg.train.calibration import DevicePeak

        self.runs.append((config, steps))
        allocated = self.allocated(config)
        return DevicePeak(allocated, int(1.2 * allocated) + 8 * 2**20)


def brats_like(**train):
    return config_from_dict(
        {
            "model": {"in_channels": 4, "out_channels": 4, "depth": 3, "base_width": 8},
            "partition": {"core": [32, 48, 48], "margin": [4, 4, 4]},
            "train": {"batch_size": 2, "amp": "auto", **train},
        }
    )


def test_calibration_fits_the_device_and_measures_the_context() -> None:
    from partseg.train.steps import input_voxels

    gpu = FakeGpu()
    config = brats_like()
    plan = plan_memory(config, parse_size("16GiB"), probe=gpu, modes=[("auto", True)])
    chosen = plan.chosen
    assert chosen is not None and chosen.core == (32, 48, 48) and chosen.batch_size == 2
    applied = apply_estimate(config, chosen)
    assert chosen.allocated == pytest.approx(gpu.allocated(applied), abs=2)
    assert chosen.reserved == pytest.approx(1.2 * gpu.allocated(applied) + 8 * 2**20, abs=4)
    assert chosen.total == chosen.reserved + 300 * 2**20
    assert plan.context_source == "measured on FakeGPU 4GB"
    assert chosen.source == "calibrated on FakeGPU 4GB"
    # calibration ran real-step probes: batch 1, small cores, the mode asked for
    probed = [run[0] for run in gpu.runs]
    assert len(probed) == 2 and all(c.train.batch_size == 1 for c in probed)
    assert all(c.train.checkpointing and c.train.amp == "auto" for c in probed)
    full = input_voxels(config)
    assert all(input_voxels(c) < full / 3 for c in probed)


def test_plan_keeps_the_safety_margin_and_reports_headroom() -> None:
    gpu = FakeGpu()
    config = brats_like()
    modes = [("auto", False)]
    full = plan_memory(config, parse_size("64GiB"), probe=gpu, modes=modes).chosen
    assert full is not None and full.core == (32, 48, 48) and full.batch_size == 2
    # a budget the full configuration fits only without the margin
    budget = int(full.total / 0.95)
    tight = plan_memory(config, budget, probe=gpu, modes=modes, safety=0.1)
    assert tight.within_margin and tight.chosen is not None
    assert tight.chosen.total <= 0.9 * budget < full.total
    assert tight.chosen.voxels_per_step < full.voxels_per_step
    data = tight.as_dict()
    assert data["limit"] == int(0.9 * budget) and data["safety"] == 0.1
    assert data["chosen"]["headroom"] == budget - tight.chosen.total
    assert data["chosen"]["headroom_share"] >= 0.1
    no_margin = plan_memory(config, budget, probe=gpu, modes=modes, safety=0.0)
    assert no_margin.chosen == full
    # the config key sets the default margin
    keyed = plan_memory(brats_like(memory_safety=0.0), budget, probe=gpu, modes=modes)
    assert keyed.chosen == full


def test_without_room_for_the_margin_the_best_fit_is_flagged() -> None:
    gpu = FakeGpu()
    config = brats_like()
    modes = [("auto", False)]
    everything = plan_memory(config, parse_size("64GiB"), probe=gpu, modes=modes)
    smallest = everything.smallest
    budget = smallest.total + 1000  # the smallest fits, but nothing leaves 10% free
    plan = plan_memory(config, budget, probe=gpu, modes=modes)
    assert plan.chosen == smallest and not plan.within_margin
    assert plan.as_dict()["within_margin"] is False


def test_estimate_errors_against_a_measured_peak() -> None:
    from partseg.train.calibration import DevicePeak, estimate_errors

    gpu = FakeGpu()
    config = brats_like()
    plan = plan_memory(config, parse_size("64GiB"), probe=gpu, modes=[("auto", False)])
    assert plan.chosen is not None
    real = gpu.peak(apply_estimate(config, plan.chosen), 3)
    exact = estimate_errors(plan.chosen, real, gpu.context_bytes())
    assert exact == {"allocated": 0.0, "reserved": 0.0, "total": 0.0}
    half = DevicePeak(real.allocated * 2, real.reserved * 2)
    errors = estimate_errors(plan.chosen, half, gpu.context_bytes())
    assert errors["allocated"] == pytest.approx(-0.5, abs=1e-3)
    assert errors["reserved"] == pytest.approx(-0.5, abs=1e-3)


def test_cpu_estimate_states_its_allowances() -> None:
    from partseg.train.planner import ALLOCATOR_SHARE, CUDA_CONTEXT_BYTES, WORKSPACE_SHARE

    plan = plan_memory(small_config(), parse_size("1GiB"), probe=None, modes=[("off", False)])
    chosen = plan.chosen
    assert chosen is not None and chosen.source == "cpu"
    assert chosen.workspace == int(WORKSPACE_SHARE * chosen.activations)
    assert chosen.allocator == int(ALLOCATOR_SHARE * chosen.allocated)
    assert chosen.context == plan.context == CUDA_CONTEXT_BYTES
    assert plan.context_source.startswith("default")
    assert chosen.total == chosen.allocated + chosen.allocator + chosen.context


def test_plan_cli_on_a_fake_gpu_checks_the_choice(monkeypatch, capsys) -> None:
    import json
    from pathlib import Path

    from partseg.cli import main
    from partseg.train import planner

    gpu = FakeGpu()
    monkeypatch.setattr(planner, "default_probe", lambda device_type: gpu)
    config = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    assert main(["plan", config, "--gpu-mem", "2GiB", "--json", "--safety", "0.2"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["safety"] == 0.2 and data["context_source"] == "measured on FakeGPU 4GB"
    check = data["check"]
    assert check["device"] == "FakeGPU 4GB" and check["context"] == 300 * 2**20
    assert check["error"] == {"allocated": 0.0, "reserved": 0.0, "total": 0.0}
    assert "calibrating on FakeGPU 4GB" in captured.err  # one progress line per measurement
    assert main(["plan", config, "--gpu-mem", "2GiB", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("plan: ") == 1  # only the check of the choice
    assert "estimate error +0.0%" in captured.out and "headroom" in captured.out


def test_plan_progress_lines_on_cpu(capsys) -> None:
    from pathlib import Path

    from partseg.cli import main

    config = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    assert main(["plan", config, "--gpu-mem", "1GiB", "--device", "cpu"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 4 and all(line.startswith("plan: ") for line in lines)
    assert lines[0].startswith("plan: 1/4 measurement (25%), ") and lines[-1].startswith(
        "plan: 4/4"
    )
    assert all("measuring activations" in line for line in lines)


# -- a core larger than the data --------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_core_shrinks_to_the_data_aligned_to_the_stride(dims: int) -> None:
    from partseg.train.planner import fit_core_to_extent

    partition = {"core": [80, 96, 96], "margin": 0}
    if dims == 2:
        partition = {"spatial_dims": 2, "core": [96, 96], "margin": 0}
    config = config_from_dict({"model": {"spatial_dims": dims, "depth": 4}, "partition": partition})
    messages: list[str] = []
    fitted = fit_core_to_extent(config, (24, 40, 30), messages.append)
    expected = (24, 40, 32) if dims == 3 else (1, 40, 32)
    assert fitted.partition.core == expected
    assert len(messages) == 1 and "larger than the training volumes" in messages[0]
    assert fit_core_to_extent(config, (200, 200, 200), messages.append) is config
    assert len(messages) == 1  # no warning when the core fits the data


def test_plan_and_training_shrink_the_core_to_the_store(store, tmp_path, capsys) -> None:
    import json
    from pathlib import Path

    from partseg.cli import main
    from partseg.train.trainer import Trainer

    tiny = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    overrides = [f"data.store={store}", "partition.core=[32,24,32]", "partition.margin=0"]
    args = ["plan", tiny, *overrides, "--gpu-mem", "1GiB", "--json", "--device", "cpu"]
    assert main([*args, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["chosen"]["core"] == [16, 16, 16]  # the store's 16^3
    assert "larger than the training volumes (largest [16, 16, 16])" in captured.err
    from partseg.config import load_config

    messages: list[str] = []
    trainer = Trainer(load_config(tiny, overrides), tmp_path / "run", log=messages.append)
    trainer.setup()
    assert trainer.partition.core == (16, 16, 16)
    assert trainer.config.partition.core == (16, 16, 16)
    assert any("larger than the training volumes" in m for m in messages)
    # config.yaml keeps the request (a rerun compares equal); the fit is re-derived each setup
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.partition.core == (32, 24, 32)


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_a_cpu_is_what_the_cpu_runs(monkeypatch, native: bool) -> None:
    from partseg import precision
    from partseg.train.planner import amp_modes

    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    config = small_config(amp="auto")
    assert amp_modes(config, "cuda") == ["auto", "off"]  # a GPU's auto takes 2 bytes a value
    assert amp_modes(config, "cpu") == (["auto", "off"] if native else ["off"])
    plan = plan_memory(config, parse_size("1GiB"), device_type="cpu", probe=None)
    assert {e.amp for e in plan.best_per_mode} == ({"auto", "off"} if native else {"off"})


def test_calibration_probes_stay_small_and_survive_a_small_gpu() -> None:
    from partseg.train.calibration import PROBE_MAX_VOXELS, probe_cores
    from partseg.train.planner import candidate_cores
    from partseg.train.steps import input_voxels

    config = config_from_dict({"partition": {"core": [80, 96, 96], "margin": [10, 10, 10]}})
    probes = probe_cores(config, candidate_cores(config))
    voxels = [input_voxels(apply_estimate_core(config, core)) for core in probes]
    assert len(probes) == 2 and voxels[0] < voxels[1] <= 1.2 * PROBE_MAX_VOXELS

    class TinyGpu(FakeGpu):
        def peak(self, config, steps):
            if config.train.checkpointing is False:
                raise torch.OutOfMemoryError("CUDA out of memory")
            return super().peak(config, steps)

    lines: list[str] = []
    plan = plan_memory(brats_like(), parse_size("8GiB"), probe=TinyGpu(), progress=lines.append)
    sources = {(e.checkpointing, e.source) for e in plan.best_per_mode}
    assert sources == {(False, "cpu"), (True, "calibrated on FakeGPU 4GB")}
    assert any("ran out of memory calibrating; measuring on the CPU" in line for line in lines)


def apply_estimate_core(config, core):
    from partseg.train.planner import apply_mode

    return apply_mode(config, core, 1, config.train.amp, False)


def test_plan_cli_says_when_the_choice_runs_out_of_memory(monkeypatch, capsys) -> None:
    from pathlib import Path

    from partseg.cli import main
    from partseg.train import planner

    class LyingGpu(FakeGpu):
        """Calibrates fine, then the chosen (batch 2) configuration runs out of memory."""

        def peak(self, config, steps):
            if config.train.batch_size > 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().peak(config, steps)

    monkeypatch.setattr(planner, "default_probe", lambda device_type: LyingGpu())
    config = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    assert main(["plan", config, "--gpu-mem", "2GiB", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "ran out of memory on FakeGPU 4GB" in err and "larger --safety" in err
