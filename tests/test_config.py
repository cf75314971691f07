"""Typed config: YAML loading, dotted overrides, validation messages, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from partseg.config import (
    ExperimentConfig,
    PartitionConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
    set_dotted,
)
from partseg.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["default.yaml", "tiny.yaml"])
def test_shipped_configs_load_and_round_trip(name: str, tmp_path: Path) -> None:
    config = load_config(CONFIGS / name)
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    assert config_from_dict(config.to_dict()) == config


def test_overrides_parse_values_as_yaml(tmp_path: Path) -> None:
    config = load_config(
        CONFIGS / "tiny.yaml",
        [
            "train.amp=off",
            "partition.core=[4, 8, 8]",
            "optim.lr=1e-2",
            "loss.params={k: 5}",
            "loss.name=dice_topk",
            "data.fold=null",
        ],
    )
    assert config.train.amp == "off"  # a string, not YAML's boolean
    assert config.partition.core == (4, 8, 8)
    assert config.optim.lr == 0.01
    assert dict(config.loss.params) == {"k": 5}
    assert apply_overrides(config, ["train.epochs=9"]).train.epochs == 9


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trian.epochs=1", "did you mean 'train'"),
        ("train.epoch=1", "did you mean 'epochs'"),
        ("model.nrom=batch", "did you mean 'norm'"),
        ("optim.lr=-0.1", "optim.lr=-0.1"),
        ("train.epochs=two", "train.epochs='two'"),
        ("loss.name=dicee", "did you mean 'dice'"),
        ("train.amp=fp8", "train.amp='fp8'"),
        ("schedule.name=step", "schedule.name='step'"),
        ("partition.core=[8, 8]", "partition.core"),
        ("model.spatial_dims=2", "partition.spatial_dims"),
        ("data.fold=3", "data.fold=3"),
        ("train.epochs", "section.key=value"),
    ],
)
def test_bad_keys_and_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(CONFIGS / "tiny.yaml", [override])


def test_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(bad)


def test_2d_partition_inserts_the_slice_axis() -> None:
    part = PartitionConfig(
        spatial_dims=2, slice_axis=1, core=(32, 48), margin=(4, 4), context_slices=2
    )
    assert part.core == (32, 1, 48) and part.margin == (4, 2, 4)
    built = part.build(total_stride=8)
    assert built.stride == (8, 1, 8) and built.input_size == (40, 5, 56)
    assert part.in_plane(built.input_size) == (40, 56)


def test_to_dict_is_plain_yaml() -> None:
    text = yaml.safe_dump(ExperimentConfig().to_dict())
    assert "!!python" not in text
    set_dotted(raw := {}, "a.b.c=1")
    assert raw == {"a": {"b": {"c": 1}}}


def test_reading_and_validating_a_recipe_imports_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import partseg.config; partseg.config.load_config('configs/default.yaml'); "
        "import sys; assert 'torch' not in sys.modules, 'torch was imported'; "
        "assert 'torchio' not in sys.modules, 'torchio was imported'"
    )
    root = CONFIGS.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["partition.core=[8, 8, 9]"], r"partition\.core=\[8, 8, 9\]: core .* use \(8, 8, 10\)"),
        (["model.depth=5"], r"partition\.core.*depth 5: total stride 16"),
        (
            [
                "model.spatial_dims=2",
                "partition.spatial_dims=2",
                "partition.core=[1, 16, 16]",
                "partition.context_slices=1",
                "model.in_channels=4",
            ],
            r"model\.in_channels=4: a 2D model with partition\.context_slices=1 reads 3 slices",
        ),
        (["loss.params={sigmoid: true}"], r"loss\.params\.sigmoid=True: .*out_channels=1"),
        (["loss.name=ce", "loss.params={weight: [1, 2]}"], r"loss\.params\.weight=\[1, 2\]"),
        (["train.val_every=0", "train.early_stop_patience=3"], r"train\.early_stop_patience=3"),
        (["train.val_every=0", "schedule.name=plateau"], "needs validation"),
    ],
)
def test_rules_between_sections_are_checked_at_load(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "tiny.yaml", overrides)


def test_rules_accept_what_fits() -> None:
    two_d = [
        "model.spatial_dims=2", "partition.spatial_dims=2", "partition.core=[1, 16, 16]",
        "partition.context_slices=1", "model.in_channels=12",
    ]  # fmt: skip
    assert load_config(CONFIGS / "tiny.yaml", two_d).model.in_channels == 12
    binary = ["model.out_channels=1", "loss.params={sigmoid: true}"]
    assert load_config(CONFIGS / "tiny.yaml", binary).loss.params == {"sigmoid": True}
    weights = ["loss.name=ce", "loss.params={weight: [1, 2, 2]}"]
    assert load_config(CONFIGS / "tiny.yaml", weights).loss.name == "ce"


def test_amp_modes_are_the_precision_modes() -> None:
    from partseg.config import AMP_MODES
    from partseg.precision import PRECISION_MODES

    assert AMP_MODES is PRECISION_MODES
