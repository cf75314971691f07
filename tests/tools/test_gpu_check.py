"""tools/gpu_check.py: budgets, records, JSON and exit status against a fake device; the CPU
dry run end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpu_check.py"
MiB = 2**20


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


class FakeDevice:
    """Steps hold ``per_voxel`` bytes per step voxel (reserved: 1.25x); context 300 MiB.
    Steps of more than ``oom_above`` voxels run out of memory."""

    context = 300 * MiB

    def __init__(self, gpu_check, per_voxel: float = 2000.0, oom_above: int = 10**12) -> None:
        self.tool, self.per_voxel, self.oom_above = gpu_check, per_voxel, oom_above
        self.runs: list = []

    def measure(self, config, budget: int, context: int, device: str):
        from partseg.train.steps import input_voxels

        self.runs.append((config, budget, context, device))
        voxels = config.train.batch_size * input_voxels(config)
        if voxels > self.oom_above:
            return self.tool.Measurement(0.5, oom=True, error="CUDA out of memory")
        allocated = int(self.per_voxel * voxels)
        return self.tool.Measurement(0.1, allocated, int(1.25 * allocated), allocated + 10)

    def infer(self, config, shape, device, method="exact"):
        scale = 4 if method == "whole" else 1
        return self.tool.Measurement(2.0, scale * 100 * MiB, scale * 120 * MiB, 500 * MiB)


def args_for(gpu_check, *extra: str):
    return gpu_check.parse_args(["--device", "cpu", "--quiet", *extra])


def test_records_errors_and_verdicts_against_a_fake_device(gpu_check) -> None:
    fake = FakeDevice(gpu_check)
    args = args_for(gpu_check, "--quick", "--recipes", "default", "--budgets", "8GiB", "4GiB")
    report = gpu_check.check(args, fake.measure, fake.infer, lambda device: fake.context)
    runs = report["training"]
    assert [r["budget"] for r in runs] == [4 * 2**30, 8 * 2**30]  # ascending budgets
    first, second = runs
    assert first["device_total"] == first["max_memory_reserved"] + fake.context
    error = first["estimate"]["total"] / first["device_total"] - 1
    assert first["estimate_error"]["total"] == pytest.approx(error, abs=1e-4)
    assert first["exceeds_budget"] is False and first["context"] == fake.context
    # the same choice at the larger budget is measured once and judged against that budget
    assert len(fake.runs) == 1 and second["same_run_as"] == f"default @ {4 * 2**30} B"
    assert second["exceeds_budget"] is False
    assert fake.runs[0][1] == 4 * 2**30 and fake.runs[0][2] == fake.context
    (inference,) = report["inference"]
    assert inference["case_shape"] == list(gpu_check.QUICK_CASE_SHAPE)
    assert inference["device_total"] == 120 * MiB + fake.context
    assert inference["fits_budget"] is True and inference["smallest_budget"] == 4 * 2**30
    assert inference["whole_volume_forward"]["max_memory_reserved"] == 480 * MiB
    assert report["failures"] == [] and gpu_check.exit_code(report) == 0
    json.dumps(report)  # the report is JSON


def test_a_run_over_its_budget_fails_the_check(gpu_check) -> None:
    hungry = FakeDevice(gpu_check, per_voxel=4e6)  # ~GiBs for the tiny quick step
    args = args_for(gpu_check, "--quick", "--recipes", "tiny", "--budgets", "4GiB")
    report = gpu_check.check(args, hungry.measure, hungry.infer, lambda device: hungry.context)
    (run,) = report["training"]
    assert run["device_total"] > run["budget"] and run["exceeds_budget"] is True
    assert report["failures"] and gpu_check.exit_code(report) == 1
    oom = FakeDevice(gpu_check, oom_above=0)
    report = gpu_check.check(args, oom.measure, oom.infer, lambda device: oom.context)
    (run,) = report["training"]
    assert run["oom"] and run["exceeds_budget"] is True and "out of memory" in run["error"]
    assert "out of memory" in report["failures"][0] and gpu_check.exit_code(report) == 1


def test_a_cpu_cannot_judge_budgets(gpu_check) -> None:
    record = {"budget": 1, "oom": False}
    assert gpu_check.exceeds(record) is None
    assert gpu_check.exceeds({**record, "device_total": 2}) is True
    assert gpu_check.exceeds({**record, "oom": True}) is True


def test_the_time_limit_skips_what_is_left(gpu_check) -> None:
    fake = FakeDevice(gpu_check)
    args = args_for(gpu_check, "--quick", "--recipes", "default", "--time-limit", "0")
    report = gpu_check.check(args, fake.measure, fake.infer, lambda device: fake.context)
    assert report["training"] == [] and report["inference"] == [] and not fake.runs
    assert report["skipped"] == ["training default: time limit", "inference default: time limit"]


def test_without_cuda_one_line_and_success(gpu_check, monkeypatch, capsys) -> None:
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "no CUDA GPU" in out[0]


def test_quick_cpu_dry_run_end_to_end(gpu_check, tmp_path, capsys) -> None:
    out = tmp_path / "check.json"
    argv = ["--device", "cpu", "--quick", "--recipes", "default", "--budgets", "4GiB"]
    assert gpu_check.main([*argv, "--quiet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    (run,) = report["training"]
    assert run["recipe"] == "default" and run["core"] == [8, 16, 16] and run["step_s"] > 0
    assert run["exceeds_budget"] is None  # a CPU has no device memory statistics
    (inference,) = report["inference"]
    assert inference["case_shape"] == [4, 20, 28, 28] and inference["seconds"] > 0
    assert inference["whole_volume_forward"]["seconds"] > 0
    assert report["failures"] == [] and report["device"].startswith("cpu")
