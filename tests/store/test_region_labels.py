"""Region-based nnU-Net ``dataset.json`` (its BraTS setting): parsing, ingest, store record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from rawdata import (
    FOREGROUND,
    NNUNET_BRATS_LABELS,
    make_label,
    write_nnunet_images,
    write_nnunet_regions,
)

from partseg.cli import main
from partseg.errors import InputError, StoreError
from partseg.geometry import Box
from partseg.store import open_store
from partseg.store.ingest import IngestSettings, ingest
from partseg.store.regions import Regions, parse_nnunet_labels
from partseg.store.sources import discover


def test_nnunet_region_labels_parse_into_regions_and_named_values() -> None:
    names, regions = parse_nnunet_labels(NNUNET_BRATS_LABELS, [1, 2, 3])
    assert names == {0: "background", 1: "label_1", 2: "label_2", 3: "enhancing_tumor"}
    assert regions == Regions(
        ("whole_tumor", "tumor_core", "enhancing_tumor"), ((1, 2, 3), (2, 3), (3,)), (1, 2, 3)
    )
    assert regions.values == (1, 2, 3) and len(regions) == 3
    plain_names, none = parse_nnunet_labels({"background": 0, "PZ": 1, "TZ": 2.0}, None)
    assert none is None and plain_names == {0: "background", 1: "PZ", 2: "TZ"}


@pytest.mark.parametrize(
    ("labels", "order", "problem"),
    [
        (NNUNET_BRATS_LABELS, None, "need regions_class_order"),
        (NNUNET_BRATS_LABELS, [1, 2], "need regions_class_order with one label value per region"),
        ({"background": 1, "wt": [1, 2]}, [1], "exactly one background entry with value 0"),
        ({"background": 0, "wt": [1, "x"]}, [1], "is not an integer or a list of them"),
        ({"background": 0, "wt": [1, 2], "tc": [2]}, [1, 0], "foreground label values"),
    ],
)
def test_bad_region_declarations_are_rejected(labels, order, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_nnunet_labels(labels, order)


def test_regions_map_to_class_ids_and_round_trip_json() -> None:
    _, regions = parse_nnunet_labels({"background": 0, "wt": [2, 4], "et": 4}, [2, 4])
    mapped = regions.mapped({0: 0, 2: 1, 4: 2})
    assert mapped.labels == ((1, 2), (2,)) and mapped.order == (1, 2)
    assert Regions.from_json(json.loads(json.dumps(mapped.to_json()))) == mapped
    assert mapped.target(np.array([0, 1, 2])).tolist() == [[0, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match=r"label values \[4\]"):
        regions.mapped({0: 0, 2: 1})
    with pytest.raises(ValueError, match="names, labels, order"):
        Regions.from_json({"names": ["a"]})


def test_ingest_records_the_regions_in_class_ids(tmp_path: Path, capsys) -> None:
    src = write_nnunet_regions(tmp_path / "raw", test_ids=("BraTS_09",))
    source = discover(src)
    assert source.layout == "msd" and source.regions is not None
    assert source.channels == ("T1", "T1ce", "T2", "Flair")
    settings = IngestSettings(chunks=(4, 8, 8), normalize="none", dtype="float32")
    report = ingest(src, tmp_path / "s.zarr", settings, progress=False)
    store = open_store(tmp_path / "s.zarr")
    assert report.total == 2 and store.classes == ("background", "label_1", "label_2",
                                                   "enhancing_tumor")  # fmt: skip
    assert store.label_mapping == {0: 0, 1: 1, 2: 2, 3: 3}
    assert store.regions is not None and store.regions.names == (
        "whole_tumor", "tumor_core", "enhancing_tumor")  # fmt: skip
    assert store.regions.labels == ((1, 2, 3), (2, 3), (3,)) and store.regions.order == (1, 2, 3)
    assert main(["info", str(tmp_path / "s.zarr"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["regions"] == store.regions.to_json()
    assert main(["info", str(tmp_path / "s.zarr")]) == 0
    assert "region     tumor_core: classes [2, 3], writes class 2" in capsys.readouterr().out
    case = store["BraTS_01"]
    _, label = case.read(Box.whole(case.shape))
    np.testing.assert_array_equal(label, make_label((1, 2, 3), seed=1)[FOREGROUND])
    # the test split of the same folder declares the same regions; its cases have no labels
    test = ingest(src, tmp_path / "t.zarr", IngestSettings(split="test"), progress=False)
    assert test.total == 1 and open_store(tmp_path / "t.zarr").regions == store.regions


def test_region_values_must_be_declared_labels(tmp_path: Path) -> None:
    src = write_nnunet_regions(tmp_path / "raw")
    with pytest.raises(InputError, match=r"regions use label values \[3\]"):
        ingest(src, tmp_path / "s.zarr", IngestSettings(labels=(1, 2)), progress=False)


def test_dataset_json_without_regions_class_order_names_the_fix(tmp_path: Path) -> None:
    src = write_nnunet_regions(tmp_path / "raw", order=None)
    with pytest.raises(InputError) as info:
        discover(src)
    assert "regions_class_order" in info.value.problem and "dataset.json" in str(info.value)


def test_a_damaged_region_record_is_a_store_error(tmp_path: Path) -> None:
    src = write_nnunet_regions(tmp_path / "raw")
    ingest(src, tmp_path / "s.zarr", IngestSettings(chunks=(4, 8, 8)), progress=False)
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    regions = dict(root.attrs["regions"])
    root.attrs["regions"] = {**regions, "labels": [[1, 2, 9], [2, 3], [3]]}
    with pytest.raises(StoreError, match=r"outside 1\.\.3"):
        open_store(tmp_path / "s.zarr")
    root.attrs["regions"] = {"names": ["wt"]}
    with pytest.raises(StoreError, match=r"not \{names, labels, order\} lists"):
        open_store(tmp_path / "s.zarr")


def test_nnunet_images_folder_is_found_without_dataset_json(tmp_path: Path) -> None:
    root = write_nnunet_images(tmp_path / "imagesTs", ids=("a", "b"), channels=3)
    (root / "b_0002.nii.gz").unlink()
    source = discover(root)
    assert source.layout == "nnunet-images" and not source.channels_named
    assert source.channels == ("ch0", "ch1", "ch2")
    assert [c.case_id for c in source.cases] == ["a", "b"]
    assert source.cases[1].image_files[2] == root / "b_0002.nii.gz"  # missing: read reports it
    assert all(c.label_file is None for c in source.cases)
    (root / "dataset.json").write_text("{}")  # a raw nnU-Net folder is the msd layout's
    with pytest.raises(InputError, match="no 'channel_names'"):
        discover(root)
