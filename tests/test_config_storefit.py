"""In/out channels from the training store, and every config/store mismatch in one error."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from partseg.config import config_from_dict, fit_to_store, load_config
from partseg.errors import ConfigError
from partseg.store.regions import Regions

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REGIONS = Regions(("wt", "tc", "et"), ((1, 2, 3), (2, 3), (3,)), (1, 2, 3))


class FakeStore(SimpleNamespace):
    """What fit_to_store reads of a store: url, channels, classes, regions, case shapes."""

    def __getitem__(self, case_id: str) -> SimpleNamespace:
        return SimpleNamespace(shape=self.shapes[int(case_id)])


def store(channels=("t1", "t1ce", "t2", "flair"), classes=4, regions=None, shapes=()):
    names = ("background", *(f"c{k}" for k in range(1, classes)))
    ids = tuple(str(i) for i in range(len(shapes)))
    return FakeStore(url="s.zarr", channels=tuple(channels), classes=names, regions=regions,
                     case_ids=ids, shapes=list(shapes))  # fmt: skip


def test_the_default_recipe_takes_its_channels_from_the_store() -> None:
    config = load_config(CONFIGS / "default.yaml")
    assert config.model.in_channels is None and config.model.out_channels is None
    fitted = fit_to_store(config, store())
    assert (fitted.model.in_channels, fitted.model.out_channels) == (4, 4)
    fitted = fit_to_store(config, store(channels=("tof",), classes=2))
    assert (fitted.model.in_channels, fitted.model.out_channels) == (1, 2)
    fitted = fit_to_store(config, store(regions=REGIONS))
    assert fitted.model.out_channels == 3  # one sigmoid output per region


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"data": {"derived_channels": ["sobel:0"]}}, 5),  # 4 channels + the Sobel contour
        ({"model": {"spatial_dims": 2}, "partition": {"spatial_dims": 2, "core": [1, 16, 16],
          "margin": [1, 0, 0], "context_slices": 1}}, 12),  # 4 channels x 3 slices
    ],
)  # fmt: skip
def test_derived_channels_and_context_slices_count(raw, expected: int) -> None:
    assert fit_to_store(config_from_dict(raw), store()).model.in_channels == expected


def test_a_two_class_store_gives_two_outputs_or_one_sigmoid() -> None:
    two = store(classes=2)
    assert fit_to_store(config_from_dict({}), two).model.out_channels == 2
    sigmoid = config_from_dict({"loss": {"params": {"sigmoid": True}}})
    assert fit_to_store(sigmoid, two).model.out_channels == 1
    explicit = config_from_dict({"model": {"out_channels": 1}})
    assert fit_to_store(explicit, two).model.out_channels == 1


def test_set_values_that_fit_are_kept() -> None:
    config = config_from_dict({"model": {"in_channels": 4, "out_channels": 4}})
    assert fit_to_store(config, store()) == config


def test_every_mismatch_is_reported_at_once() -> None:
    raw = {
        "model": {"in_channels": 2, "out_channels": 4},
        "partition": {"margin": [30, 2, 2]},
        "loss": {"name": "ce", "params": {"weight": [1.0, 2.0, 2.0, 2.0]}},
    }
    with pytest.raises(ConfigError) as info:
        fit_to_store(config_from_dict(raw), store(regions=REGIONS, shapes=[(20, 30, 30)]))
    message = str(info.value)
    assert message.startswith("the config does not fit store s.zarr: ")
    assert (
        "model.in_channels=2 but the store gives 4 channels ['t1', 't1ce', 't2', 'flair']: "
        "set model.in_channels=4 or leave it unset" in message
    )
    assert "model.out_channels=4 but the store gives 3 regions ['wt', 'tc', 'et']" in message
    assert "loss.params.weight=[1.0, 2.0, 2.0, 2.0] gives per-class weights" in message
    assert "partition.margin=[30, 2, 2] is larger than the largest volume ([20, 30, 30]" in message
    assert message.count("; ") >= 3  # one error, four problems


def test_a_derived_channel_of_a_missing_source_channel_is_one_of_the_problems() -> None:
    raw = {"data": {"derived_channels": ["sobel:7"]}, "model": {"out_channels": 9}}
    with pytest.raises(ConfigError) as info:
        fit_to_store(config_from_dict(raw), store())
    assert "'sobel:7' reads channel 7" in str(info.value)
    assert "model.out_channels=9" in str(info.value)


def test_a_sigmoid_loss_needs_a_two_class_store() -> None:
    with pytest.raises(ConfigError, match=r"loss\.params\.sigmoid needs a 2-class store"):
        fit_to_store(config_from_dict({"loss": {"params": {"sigmoid": True}}}), store())
