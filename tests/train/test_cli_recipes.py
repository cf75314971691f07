"""``partseg plan / train / cv`` on a recipe (a compare config) with ``--variant``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from partseg.cli import main
from partseg.config import load_config


@pytest.fixture
def recipe(tmp_path: Path, tiny_yaml: Path) -> Path:
    """A recipe whose base is configs/tiny.yaml, with two variants."""
    raw = {
        "title": "two",
        "base": yaml.safe_load(tiny_yaml.read_text()),
        "variants": [
            {"name": "plain"},
            {"name": "wide", "overrides": {"model.base_width": 6, "train.epochs": 1}},
        ],
    }
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_a_recipe_variant(recipe: Path, store: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", str(recipe), "--variant", "wide", f"data.store={store}", "--out", str(out)]
    assert main([*argv, "train.steps_per_epoch=1"]) == 0
    saved = load_config(out / "config.yaml")
    assert saved.model.base_width == 6 and saved.train.epochs == 1 and saved.data.store == store
    assert (out / "checkpoints" / "last.pt").is_file()


def test_a_recipe_with_several_variants_needs_one(recipe: Path, store: str, capsys) -> None:
    assert main(["train", str(recipe), f"data.store={store}"]) == 2
    assert "pass --variant NAME, one of: plain, wide" in capsys.readouterr().err
    assert main(["plan", str(recipe), "--variant", "wdie", "--gpu-mem", "1GiB"]) == 2
    assert "did you mean 'wide'?" in capsys.readouterr().err


def test_plan_a_recipe_variant(recipe: Path, capsys) -> None:
    argv = ["plan", str(recipe), "--variant", "wide", "--gpu-mem", "1GiB", "--device-type", "cpu"]
    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["chosen"] is not None


def test_cv_a_recipe_variant(recipe: Path, store: str, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    argv = ["cv", str(recipe), "--variant", "wide", "--folds", "2", "--out", str(out)]
    assert main([*argv, f"data.store={store}", "train.steps_per_epoch=1"]) == 0
    summary = json.loads((out / "cv_summary.json").read_text())
    assert [r["fold"] for r in summary["folds"]] == [0, 1]
    assert load_config(out / "fold_1" / "config.yaml").model.base_width == 6
