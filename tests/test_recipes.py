"""The built-in recipes: found by name (:mod:`partseg.recipes`), shipped in the wheel, and every
recipe in configs/ runs end to end on phantom data with its ``quick:`` settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from partseg.cli import main
from partseg.errors import ConfigError
from partseg.experiments import load_compare_config, run_compare
from partseg.recipes import recipe_names, recipe_path, resolve_config

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
    "brats_cpu_lowres",
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
    "aneurysm_loss_ensemble", "aneurysm_cascade", "pancreas_tverskyce", "brats_cpu_lowres",
)  # fmt: skip


@pytest.mark.parametrize("name", COMPARE_CONFIGS)
def test_every_compare_config_validates_full_and_quick(name: str) -> None:
    full = load_compare_config(CONFIGS / f"{name}.yaml")
    quick = load_compare_config(CONFIGS / f"{name}.yaml", quick=True)
    assert full.names == quick.names
    assert quick.phantom is not None and full.phantom is not None
    assert quick.phantom.cases <= full.phantom.cases


def test_every_yaml_in_configs_is_found_by_name() -> None:
    files = sorted(CONFIGS.glob("*.yaml"))
    assert recipe_names() == [f.stem for f in files]
    for file in files:
        assert recipe_path(file.stem).samefile(file)
        assert recipe_path(file.name).samefile(file)


def test_unknown_recipe_names_it_and_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'brats_4d'") as err:
        recipe_path("brats_4d")
    assert all(name in str(err.value) for name in recipe_names())


def test_resolve_config_prefers_a_file_then_a_bare_recipe_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_config("tiny").samefile(CONFIGS / "tiny.yaml")
    assert resolve_config("tiny.yaml").samefile(CONFIGS / "tiny.yaml")
    Path("tiny.yaml").write_text("train:\n  epochs: 1\n")
    assert resolve_config("tiny.yaml") == Path("tiny.yaml")  # a file in the folder wins
    with pytest.raises(ConfigError, match=r"config sub/tiny\.yaml not found") as err:
        resolve_config("sub/tiny.yaml")  # a path into a folder is never a recipe name
    assert all(name in str(err.value) for name in recipe_names())


def test_cli_missing_config_names_the_path_and_the_recipes(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.yaml"
    for command in (["plan", "--gpu-mem", "1GiB"], ["train"], ["cv"], ["compare"]):
        assert main([*command, str(missing)]) == 2
        err = capsys.readouterr().err
        assert str(missing) in err and "demo" in err and "tiny" in err, (command, err)


def test_cli_compare_takes_a_recipe_name(tmp_path: Path, capsys) -> None:
    assert main(["compare", "brats_2d", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    assert str(tmp_path / "report" / "report.md") in capsys.readouterr().out


def test_pyproject_lists_every_subpackage() -> None:
    """``packages`` is a list (``packages.find`` cannot map configs/ to partseg.configs)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = CONFIGS.parent
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(root).parts)
        for init in root.glob("partseg/**/__init__.py")
    }
    assert sorted(setuptools["packages"]) == sorted(on_disk | {"partseg.configs"})
    assert setuptools["package-dir"] == {"partseg.configs": "configs"}
