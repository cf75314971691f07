"""Channel names across editions: aliases, order, ``--channel-map`` at ingest and on resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rawdata import FOREGROUND, make_image, write_brats, write_nnunet_images

from partseg.cli import main
from partseg.errors import InputError, StoreError
from partseg.geometry import Box
from partseg.store import open_store
from partseg.store.editions import (
    BRATS23_CHANNELS,
    BRATS_CHANNELS,
    canonical,
    channel_order,
    channels_problem,
    parse_channel_map,
    same_channels,
)
from partseg.store.ingest import IngestSettings, ingest

MSD_BRAIN = ("FLAIR", "T1w", "t1gd", "T2w")  # Task01_BrainTumour's order and spelling
NNUNET_BRATS = ("T1", "T1ce", "T2", "Flair")  # nnU-Net's BraTS conversion


@pytest.mark.parametrize("names", [BRATS23_CHANNELS, NNUNET_BRATS, ("T1N", "T1C", "T2W", "T2F")])
def test_every_edition_names_the_brats_2020_modalities_in_the_same_order(names) -> None:
    assert same_channels(BRATS_CHANNELS, names) and same_channels(names, BRATS_CHANNELS)
    assert channel_order(BRATS_CHANNELS, names) is None  # nothing to reorder
    assert channels_problem(BRATS_CHANNELS, names) is None


def test_another_order_is_matched_channel_by_channel() -> None:
    order = channel_order(BRATS_CHANNELS, MSD_BRAIN)
    assert order == (1, 2, 3, 0)
    assert [canonical(MSD_BRAIN[i]) for i in order] == list(BRATS_CHANNELS)
    assert channel_order(BRATS23_CHANNELS, ("t2f", "t1n", "t1c", "t2w")) == (1, 2, 3, 0)
    assert channels_problem(BRATS_CHANNELS, MSD_BRAIN) is None


@pytest.mark.parametrize(
    ("found", "problem"),
    [
        (("t1", "t1ce", "t2"), "3 channels where the model takes 4"),
        (("t1", "t1ce", "t2", "adc"), "no channel matches ['flair']"),
        (("t1", "t1n", "t2", "flair"), "two channels name one modality"),
    ],
)
def test_channels_that_cannot_feed_the_model_say_why(found, problem) -> None:
    assert channel_order(BRATS_CHANNELS, found) is None
    assert not same_channels(BRATS_CHANNELS, found)
    assert problem in channels_problem(BRATS_CHANNELS, found)


def test_unknown_names_compare_case_insensitively_and_exactly_otherwise() -> None:
    assert same_channels(("TOF",), ("tof",)) and not same_channels(("tof",), ("t1",))


@pytest.mark.parametrize("bad", ["t1n", "t1n=", "=t1", "a=b=c", "t1n=t1,t1n=t2"])
def test_channel_map_syntax_is_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_channel_map(bad)


def test_ingest_renames_channels_and_a_resume_must_use_the_same_map(tmp_path: Path) -> None:
    src = write_brats(tmp_path / "raw", year=2023)
    store = tmp_path / "s.zarr"
    rename = tuple(zip(BRATS23_CHANNELS, BRATS_CHANNELS, strict=True))
    settings = IngestSettings(chunks=(4, 8, 8), channel_map=rename)
    report = ingest(src, store, settings, progress=False)
    opened = open_store(store)
    assert opened.channels == BRATS_CHANNELS and report.total == 2
    assert opened["B_001"].attrs["channels"] == list(BRATS_CHANNELS)
    assert opened.attrs["ingest"]["channel_map"] == [list(p) for p in rename]
    image, _ = opened["B_001"].read(Box.whole(opened["B_001"].shape))
    assert image.shape[0] == 4  # the same data, renamed
    again = ingest(src, store, settings, progress=False)  # same map: resumes
    assert again.already == ["B_001", "B_002"] and not again.written
    refused = r"was ingested with channels = \['t1', 't1ce', 't2', 'flair'\], this run asks"
    with pytest.raises(StoreError, match=refused):
        ingest(src, store, IngestSettings(chunks=(4, 8, 8)), progress=False)  # no map
    with pytest.raises(StoreError, match="was ingested with"):
        ingest(src, store, IngestSettings(chunks=(4, 8, 8), channel_map=rename[:2]), progress=False)


def test_a_store_without_a_map_resumes_as_before(tmp_path: Path) -> None:
    src = write_brats(tmp_path / "raw")
    store = tmp_path / "s.zarr"
    ingest(src, store, IngestSettings(chunks=(4, 8, 8)), progress=False)
    assert "channel_map" not in open_store(store).attrs["ingest"]
    assert ingest(src, store, IngestSettings(chunks=(4, 8, 8)), progress=False).total == 2


def test_renaming_a_channel_the_dataset_lacks_lists_its_channels(tmp_path: Path) -> None:
    src = write_brats(tmp_path / "raw")
    with pytest.raises(InputError, match=r"renames \['t1n'\].*\['t1', 't1ce', 't2', 'flair'\]"):
        ingest(src, tmp_path / "s.zarr", IngestSettings(channel_map=(("t1n", "x"),)),
               progress=False)  # fmt: skip
    with pytest.raises(InputError, match="two channels one name"):
        ingest(src, tmp_path / "s.zarr", IngestSettings(channel_map=(("t1", "t2"),)),
               progress=False)  # fmt: skip


def test_cli_channel_map_names_the_channels_of_an_nnunet_images_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_nnunet_images(tmp_path / "imagesTs", channels=2)
    store = str(tmp_path / "s.zarr")
    args = ["--normalize", "none", "--dtype", "float32", "--channel-map", "ch0=t2,ch1=adc"]
    assert main(["ingest", str(src), store, "--no-progress", *args]) == 0
    opened = open_store(store)
    assert opened.channels == ("t2", "adc") and opened.attrs["layout"] == "nnunet-images"
    image, label = opened["case_b"].read(Box.whole(opened["case_b"].shape))
    np.testing.assert_array_equal(image, make_image(2, seed=1)[(slice(None), *FOREGROUND)])
    assert label is None  # a test folder has no labels
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["ingest", str(src), store, "--channel-map", "ch0"])
    assert info.value.code == 2 and "expected old=new pairs" in capsys.readouterr().err
