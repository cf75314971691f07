"""Every recipe in configs/ runs end to end on phantom data with its ``quick:`` settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from partseg.experiments import load_compare_config, run_compare

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: Every recipe of configs/ runs end to end at its ``quick:`` size (2-4 s each on 2 idle cores).
RECIPES = [
    "brats_2d",
    "brats_3d",
    "brats_3d_context",
    "compare_brats",
    "demo",
    "aneurysm_loss_ensemble",
    "aneurysm_cascade",
    "pancreas_tverskyce",
]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_runs_quick(name: str, tmp_path: Path) -> None:
    config = load_compare_config(CONFIGS / f"{name}.yaml", quick=True)
    outcome = run_compare(config, tmp_path / name, progress=False, log=lambda _: None)
    data = json.loads((outcome.report_dir / "results.json").read_text())
    assert data["variants"] == config.names
    for row in data["scores"]:
        assert 0.0 <= row["dice"] <= 1.0
    assert (outcome.report_dir / "report.md").read_text().startswith(f"# {config.title}")
    lines: list[str] = []
    again = run_compare(config, tmp_path / name, progress=False, log=lines.append)
    runs = len(config.variants) * max(config.folds, 1)
    assert sum("not retrained" in line for line in lines) == runs
    assert [r.scores for r in again.runs] == [r.scores for r in outcome.runs]


COMPARE_CONFIGS = (
    "brats_2d", "brats_3d", "brats_3d_context", "compare_brats", "demo",
    "aneurysm_loss_ensemble", "aneurysm_cascade", "pancreas_tverskyce",
)  # fmt: skip


@pytest.mark.parametrize("name", COMPARE_CONFIGS)
def test_every_compare_config_validates_full_and_quick(name: str) -> None:
    full = load_compare_config(CONFIGS / f"{name}.yaml")
    quick = load_compare_config(CONFIGS / f"{name}.yaml", quick=True)
    assert full.names == quick.names
    assert quick.phantom is not None and full.phantom is not None
    assert quick.phantom.cases <= full.phantom.cases
