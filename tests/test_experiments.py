"""Tests of partseg.experiments: compare configs, splits, phantom derivation, resumable runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from partseg.errors import ConfigError, LockError
from partseg.experiments import (
    PhantomSpec,
    compare_config_from_dict,
    derive_phantoms,
    experiment_dict,
    load_compare_config,
    make_split,
    prepare_store,
    run_compare,
    scores_of,
    set_path,
)

#: The smallest comparison that trains, predicts and reports: 16^3 phantoms, one step.
TINY = {
    "title": "tiny",
    "phantom": {"kind": "brats", "cases": 3, "shape": [16, 24, 24], "seed": 1},
    "evaluation": {"test_fraction": 0.34, "overlay_slices": 1, "batch_size": 4},
    "base": {
        "data": {"val_fraction": 0.0},
        "model": {"depth": 2, "base_width": 2, "in_channels": 4, "out_channels": 4},
        "partition": {"core": [8, 8, 8], "margin": [2, 2, 2]},
        "sampler": {"kind": "uniform", "samples_per_case": 1},
        "augment": {"enabled": False},
        "train": {
            "epochs": 1,
            "steps_per_epoch": 1,
            "batch_size": 1,
            "device": "cpu",
            "workers": 0,
            "amp": "off",
            "val_every": 0,
            "progress": False,
        },
    },
    "variants": [{"name": "ctx", "description": "with context"}],
}


def test_set_path_nested_and_list_index() -> None:
    raw: dict = {"cascades": [{"voi": 64}]}
    set_path(raw, "base.train.epochs", 3)
    set_path(raw, "cascades.0.voi", 16)
    assert raw == {"cascades": [{"voi": 16}], "base": {"train": {"epochs": 3}}}
    with pytest.raises(ConfigError, match="index"):
        set_path(raw, "cascades.3.voi", 1)
    with pytest.raises(ConfigError, match="not a section"):
        set_path(raw, "base.train.epochs.x", 1)


def test_variant_overrides_and_quick() -> None:
    raw = {
        "base": {"train": {"epochs": 5}, "partition": {"core": [16, 16, 16]}},
        "variants": [
            {"name": "a"},
            {"name": "b", "overrides": {"partition.margin": [4, 4, 4], "train.epochs": 7}},
        ],
        "quick": {"base.train.epochs": 1, "variants": {"b": {"train.epochs": 2}}},
    }
    full = compare_config_from_dict(raw)
    a, b = (experiment_dict(full, v) for v in full.variants)
    assert a["train"]["epochs"] == 5 and "margin" not in a["partition"]
    assert b["train"]["epochs"] == 7 and b["partition"]["margin"] == [4, 4, 4]
    quick = compare_config_from_dict(raw, quick=True, overrides=["store=s.zarr"])
    assert quick.store == "s.zarr"
    a, b = (experiment_dict(quick, v) for v in quick.variants)
    assert (a["train"]["epochs"], b["train"]["epochs"]) == (1, 2)
    assert raw["base"]["train"]["epochs"] == 5  # the input is not modified


def test_experiment_dict_sets_the_shared_split() -> None:
    cfg = compare_config_from_dict({"variants": [{"name": "a"}], "base": {"data": {"folds": 3}}})
    raw = experiment_dict(cfg, cfg.variants[0], store="s", train_cases=["c1"], val_cases=["c2"])
    assert raw["data"] == {
        "folds": 0,
        "store": "s",
        "train_cases": ["c1"],
        "val_cases": ["c2"],
        "fold": None,
        "val_fraction": 0.2,
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"variants": []}, "at least one"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "used twice"),
        ({"variants": [{"name": "a"}], "extra": 1}, "unknown key 'extra'"),
        ({"variants": [{"name": "a", "overrides": {"train.epochz": 1}}]}, "variant a"),
        ({"variants": [{"name": "a"}], "ensembles": [{"name": "e", "members": ["b"]}]}, "unknown"),
        ({"variants": [{"name": "a"}], "phantom": {"kind": "x"}}, "phantom.kind"),
        ({"variants": [{"name": "a"}], "evaluation": {"blnd": "crop"}}, "evaluation.blnd"),
        (
            {"variants": [{"name": "a"}], "evaluation": {"batch_size": "two"}},
            r"evaluation\.batch_size='two': expected an integer",
        ),
        (
            {"variants": [{"name": "a"}], "evaluation": {"out_of_fold": "maybe"}},
            r"evaluation\.out_of_fold='maybe': expected true or false",
        ),
        (
            {"variants": [{"name": "a"}], "cascades": [{"name": "c", "voi": "big"}]},
            r"cascades\.voi",
        ),
        ({"variants": [{"name": "a"}], "quick": {"variants": {"z": {}}}}, "unknown variant"),
    ],
)
def test_bad_compare_configs_name_the_problem(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compare_config_from_dict(raw, quick=True)


def test_make_split_disjoint_and_deterministic() -> None:
    ids = [f"c{i:02d}" for i in range(10)]
    cfg = compare_config_from_dict({"variants": [{"name": "a"}], "folds": 3})
    split = make_split(ids, cfg)
    assert split == make_split(list(reversed(ids)), cfg)
    assert len(split.test) == 2 and len(split.folds) == 3
    vals = [c for _, val in split.folds for c in val]
    assert sorted(vals + list(split.test)) == ids
    for train, val in split.folds:
        assert not set(train) & set(val) and not set(train) & set(split.test)
    holdout = make_split(ids, compare_config_from_dict({"variants": [{"name": "a"}]}))
    ((train, val),) = holdout.folds
    assert len(val) == 2 and len(train) == 6
    capped = {"variants": [{"name": "a"}], "base": {"data": {"max_val_cases": 1}}}
    ((train, val),) = make_split(ids, compare_config_from_dict(capped)).folds
    assert len(val) == 1 and len(train) == 7  # the case it would not validate on trains


def test_scores_of_keeps_report_metrics() -> None:
    summary = {
        "classes": {
            "tumor": {
                "dice": {"mean": 0.5, "n": 2},
                "hd95": {"mean": 0.0, "n": 0},
                "jaccard": {"mean": 0.3, "n": 2},
            }
        },
        "regions": {"wt": {"dice": {"mean": 0.7, "n": 2}}},
    }
    assert scores_of(summary) == {"tumor": {"dice": 0.5, "hd95": None}, "wt": {"dice": 0.7}}


def test_derive_phantoms_whole_tumor_and_channel_subset(tmp_path: Path) -> None:
    import nibabel as nib

    from partseg.phantom import write_phantoms

    write_phantoms(tmp_path / "raw", 1, (16, 24, 24), seed=0, progress=False)
    spec = PhantomSpec(cases=2, target="whole_tumor", channels=("flair",))
    assert spec.derived
    derive_phantoms(tmp_path / "raw", tmp_path / "out", spec)
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "flair"}
    assert meta["labels"] == {"background": 0, "whole_tumor": 1}
    assert sorted(p.name for p in (tmp_path / "out/imagesTr").iterdir()) == [
        "Phantom_001_0000.nii.gz"
    ]
    seg = np.asarray(nib.load(tmp_path / "raw/Phantom_001/Phantom_001_seg.nii.gz").dataobj)
    out = np.asarray(nib.load(tmp_path / "out/labelsTr/Phantom_001.nii.gz").dataobj)
    np.testing.assert_array_equal(out, (seg > 0).astype(np.uint8))


def test_sobel_is_no_longer_a_phantom_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key phantom\.sobel"):
        compare_config_from_dict({"variants": [{"name": "a"}], "phantom": {"sobel": True}})


def test_aneurysm_phantoms_are_ingested_as_written(tmp_path: Path) -> None:
    from partseg.store import open_store

    spec = {"kind": "aneurysm", "cases": 2, "shape": [24, 32, 32], "seed": 0}
    cfg = compare_config_from_dict({"variants": [{"name": "a"}], "phantom": spec})
    assert cfg.phantom is not None and not cfg.phantom.derived
    store = open_store(prepare_store(cfg, tmp_path, progress=False))
    assert not (tmp_path / "data" / "phantom_derived").exists()
    assert store.channels == ("tof",) and store.case_ids == ("Phantom_001", "Phantom_002")
    assert store.label_mapping == {0: 0, 1: 1} and len(store.classes) == 2
    assert sum(store[c].voxel_counts.get(1, 0) for c in store.case_ids) > 0


def test_run_compare_end_to_end_and_resume(tmp_path: Path) -> None:
    cfg = compare_config_from_dict(TINY)
    lines: list[str] = []
    outcome = run_compare(cfg, tmp_path / "cmp", progress=False, log=lines.append)
    report = outcome.report_dir
    names = {p.name for p in report.iterdir()}
    assert {
        "report.md",
        "results.csv",
        "results.json",
        "loss_curves.png",
        "overlays.png",
        "confusion.png",
        "class_distribution.png",
    } <= names
    data = json.loads((report / "results.json").read_text())
    assert data["variants"] == ["ctx"]
    targets = {row["target"] for row in data["scores"]}
    assert targets == {
        "necrotic",
        "edema",
        "enhancing",
        "whole_tumor",
        "tumor_core",
        "enhancing_tumor",
    }
    costs = data["costs"][0]
    assert costs["parameters"] > 0 and costs["saved_activation_mb"] > 0
    assert costs["epoch_seconds"] > 0
    assert costs["seam_index"] is None  # exact prediction: no tile faces
    from partseg.store import open_store

    store = open_store(tmp_path / "cmp/data/phantom.zarr")
    test = json.loads((tmp_path / "cmp/split.json").read_text())["test"]
    voxels = sum(int(np.prod(store[c].shape)) for c in test)
    assert np.asarray(data["runs"][0]["confusion"]).sum() == voxels
    checkpoint = tmp_path / "cmp/runs/ctx/fold0/checkpoints/last.pt"
    before = checkpoint.stat().st_mtime_ns
    lines.clear()
    run_compare(cfg, tmp_path / "cmp", progress=False, log=lines.append)
    assert any("not retrained" in line for line in lines)
    assert checkpoint.stat().st_mtime_ns == before
    assert data["hd95_convention"] == "max_directed"
    pooled = compare_config_from_dict(TINY, overrides=["evaluation.hd95_convention=pooled"])
    report = run_compare(pooled, tmp_path / "cmp", progress=False, log=lines.append).report_dir
    assert json.loads((report / "results.json").read_text())["hd95_convention"] == "pooled"
    assert "HD95 convention: pooled" in (report / "report.md").read_text()
    assert checkpoint.stat().st_mtime_ns == before  # re-scored, not retrained
    assert costs["masked_voxels"] is None  # no nonzero mask
    masked = compare_config_from_dict(TINY, overrides=["evaluation.nonzero_mask=true"])
    report = run_compare(masked, tmp_path / "cmp", progress=False, log=lines.append).report_dir
    masked_costs = json.loads((report / "results.json").read_text())["costs"][0]
    assert costs["air_voxels"] > 0  # the 1-step model calls some of the air tumour ...
    assert masked_costs["air_voxels"] == 0  # ... the mask scores none of it ...
    assert masked_costs["masked_voxels"] == costs["air_voxels"]  # ... and says how much it was
    text = (report / "report.md").read_text()
    assert "`masked_voxels`" in text and "outside the head (0 in every channel) set to" in text
    grid = compare_config_from_dict(TINY, overrides=["evaluation.partition=grid"])
    report = run_compare(grid, tmp_path / "cmp", progress=False, log=lines.append).report_dir
    assert np.isfinite(json.loads((report / "results.json").read_text())["costs"][0]["seam_index"])
    changed = compare_config_from_dict(
        {**TINY, "variants": [{"name": "ctx", "overrides": {"partition.margin": [0, 0, 0]}}]}
    )
    with pytest.raises(ConfigError, match="another config"):
        run_compare(changed, tmp_path / "cmp", progress=False, log=lines.append)


def test_load_compare_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_compare_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_compare_config(bad)


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ({"blend": "gaussian", "overlap": 0}, r"evaluation\.overlap=0 with evaluation\.blend"),
        ({"blend": "crop", "overlap": 0.5}, "crop keeps each core once"),
        ({"blend": "gausian"}, "did you mean 'gaussian'"),
    ],
)
def test_evaluation_blend_and_overlap_are_checked_at_load(evaluation: dict, message: str) -> None:
    raw = {"variants": [{"name": "a"}], "evaluation": evaluation}
    with pytest.raises(ConfigError, match=message):
        compare_config_from_dict(raw)  # when the config is loaded, before anything trains


def test_an_overlap_in_voxels_stays_voxels() -> None:
    evaluation = {"partition": "grid", "blend": "gaussian", "overlap": 16}
    spec = compare_config_from_dict({"variants": [{"name": "a"}], "evaluation": evaluation})
    assert spec.evaluation.overlap == 16 and isinstance(spec.evaluation.overlap, int)
    evaluation["overlap"] = 0.25
    spec = compare_config_from_dict({"variants": [{"name": "a"}], "evaluation": evaluation})
    assert spec.evaluation.overlap == 0.25


def test_the_loss_ensemble_recipe_blends_with_margin_zero() -> None:
    from partseg.infer.blends import overlap_per_side
    from partseg.recipes import recipe_path

    cfg = load_compare_config(recipe_path("aneurysm_loss_ensemble"))
    assert cfg.evaluation.blend == "gaussian" and cfg.base["partition"]["margin"] == [0, 0, 0]
    core = cfg.base["partition"]["core"]
    assert all(o > 0 for o in overlap_per_side(cfg.evaluation.overlap, "gaussian", core))


def test_hd95_convention_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"evaluation\.hd95_convention='hd'; choose one of"):
        compare_config_from_dict(TINY, overrides=["evaluation.hd95_convention=hd"])


def _two_variants(overrides: dict | None = None) -> dict:
    base = TINY["base"]
    variants = [
        {"name": "a", "overrides": {"model.name": "dilated_unet"}},
        {"name": "b", "overrides": overrides or {}},
    ]
    return {**TINY, "base": base, "variants": variants}


def test_dotted_cli_override_of_a_variant_merges_into_its_section() -> None:
    cfg = compare_config_from_dict(
        _two_variants(), overrides=["variants.0.overrides.model.base_width=8"]
    )
    model = experiment_dict(cfg, cfg.variants[0])["model"]
    # the variant's dotted model.name and the CLI's base_width both land; the base stays
    assert model == {**TINY["base"]["model"], "name": "dilated_unet", "base_width": 8}
    cfg = compare_config_from_dict(
        _two_variants(), overrides=["variants.1.overrides.model.depth=3"]
    )
    assert experiment_dict(cfg, cfg.variants[1])["model"] == {**TINY["base"]["model"], "depth": 3}


@pytest.mark.parametrize(
    "overrides", [{"model.base_width": 8}, {"model": {"base_width": 8}}], ids=["dotted", "nested"]
)
def test_yaml_variant_overrides_merge_into_the_base_section(overrides: dict) -> None:
    cfg = compare_config_from_dict(_two_variants(overrides))
    model = experiment_dict(cfg, cfg.variants[1])["model"]
    assert model == {**TINY["base"]["model"], "base_width": 8}


def test_a_dotted_key_with_a_mapping_value_sets_that_value() -> None:
    raw = _two_variants({"loss.name": "tversky", "loss.params": {"alpha": 0.7, "beta": 0.3}})
    raw["base"] = {**TINY["base"], "loss": {"name": "focal", "params": {"gamma": 2.0}}}
    cfg = compare_config_from_dict(raw)
    loss = experiment_dict(cfg, cfg.variants[1])["loss"]
    assert loss == {"name": "tversky", "params": {"alpha": 0.7, "beta": 0.3}}  # gamma replaced


def _with_combinations() -> dict:
    raw = _two_variants()
    raw["variants"] = [*raw["variants"], {"name": "c"}]
    raw["ensembles"] = [{"name": "ab", "members": ["a", "b"]}]
    raw["cascades"] = [{"name": "ac", "coarse": "a", "fine": "c"}]
    return raw


def test_select_variants_keeps_complete_combinations_and_notes_the_rest() -> None:
    from partseg.experiments.config import select_variants

    cfg = compare_config_from_dict(_with_combinations())
    kept, notes = select_variants(cfg, ["a", "b"])
    assert kept.names == ["a", "b", "ab"]
    assert notes == ["cascade 'ac' left out: it needs c, not selected"]
    kept, notes = select_variants(cfg, ["ac"])  # a combination brings its members
    assert kept.names == ["a", "c", "ac"] and notes == [
        "ensemble 'ab' left out: it needs b, not selected"
    ]
    with pytest.raises(ConfigError, match=r"'d' is not in this recipe.*choose from: a, b, c, ab"):
        select_variants(cfg, ["d"])


def test_select_folds_keeps_some_folds_and_leaves_out_the_ensembles() -> None:
    from partseg.experiments.config import select_folds

    cfg = compare_config_from_dict({**_with_combinations(), "folds": 3})
    kept, notes = select_folds(cfg, [2, 0, 2])
    assert kept.fold_indices == (0, 2) and kept.names == ["a", "b", "c", "ac"]
    assert notes == ["ensemble 'ab' left out: it pools every fold, and only folds 0, 2 of 3 run"]
    assert select_folds(cfg, [0, 1, 2]) == (cfg, [])  # every fold: nothing left out
    assert cfg.fold_indices == (0, 1, 2)
    with pytest.raises(ConfigError, match="numbered 0 to 2"):
        select_folds(cfg, [3])
    with pytest.raises(ConfigError, match="give --folds K"):
        select_folds(compare_config_from_dict(_with_combinations()), [0])


def test_compare_one_fold_per_job_then_the_report_over_every_fold(tmp_path: Path, capsys) -> None:
    """``--fold 1`` trains and scores fold 1 only; the rerun without it trains fold 0, resumes
    fold 1 and reports over both, as one run would."""
    import yaml

    from partseg.cli import main

    raw = {**TINY, "phantom": {**TINY["phantom"], "cases": 4}, "evaluation": {
        **TINY["evaluation"], "test_fraction": 0.25}}  # fmt: skip
    config = tmp_path / "cmp.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    args = ["compare", str(config), "--out", str(out), "--folds", "2", "--no-progress"]
    assert main([*args, "--fold", "1"]) == 0
    assert not (out / "runs/ctx/fold0").exists()
    checkpoint = out / "runs/ctx/fold1/checkpoints/last.pt"
    before = checkpoint.stat().st_mtime_ns
    data = json.loads((out / "report" / "results.json").read_text())
    assert [run["fold"] for run in data["runs"]] == [1]
    assert [run["fold"] for run in data["out_of_fold"]["runs"]] == [1]
    assert data["settings"]["training"].startswith("fold(s) 1 of 2;")
    assert (out / "report" / "confusion.png").is_file() and (out / "report/overlays.png").is_file()
    assert main(args) == 0
    assert checkpoint.stat().st_mtime_ns == before  # resumed, not retrained
    data = json.loads((out / "report" / "results.json").read_text())
    assert sorted(run["fold"] for run in data["runs"]) == [0, 1]
    assert data["settings"]["training"].startswith("2 fold(s);")
    assert [r["folds"] for r in data["scores"] if r["target"] == "whole_tumor"] == [2]
    capsys.readouterr()
    assert main([*args, "--fold", "2"]) == 2
    assert "--fold 2: the 2 folds are numbered 0 to 1" in capsys.readouterr().err


def test_compare_fold_jobs_share_the_folder_and_take_turns_writing_it(
    tmp_path: Path, monkeypatch
) -> None:
    """A fold job holds the folder only to prepare the data and to write its report: a sibling
    fold job writing is waited for, a whole comparison holding the folder refuses it at once,
    and no lock is held while it trains."""
    import threading

    from partseg.experiments import runner
    from partseg.experiments.config import select_folds
    from partseg.locking import acquire, read_holder

    raw = {**TINY, "phantom": {**TINY["phantom"], "cases": 4}, "folds": 2, "evaluation": {
        **TINY["evaluation"], "test_fraction": 0.25}}  # fmt: skip
    job, _ = select_folds(compare_config_from_dict(raw), [1])
    out = tmp_path / "out"
    holders = []

    def train_variant(*args, **kwargs):
        holders.append(read_holder(out))
        return original(*args, **kwargs)

    original = runner.train_variant
    monkeypatch.setattr(runner, "train_variant", train_variant)
    whole = acquire(out, "compare")
    with pytest.raises(LockError, match=r"in use by partseg compare \(pid"):
        run_compare(job, out, progress=False, log=lambda _m: None)
    whole.release()
    sibling, lines = acquire(out, "compare --fold"), []
    threading.Timer(0.5, sibling.release).start()  # a fold job finishing its data preparation
    run_compare(job, out, progress=False, log=lines.append)
    assert any("in use by partseg compare --fold" in line for line in lines)
    assert holders == [None]  # trained with the folder free for the other fold jobs
    assert read_holder(out) is None
    assert json.loads((out / "report" / "results.json").read_text())["runs"][0]["fold"] == 1


def test_load_training_config_picks_a_recipe_variant(tmp_path: Path) -> None:
    import yaml

    from partseg.experiments.config import load_training_config

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_with_combinations()))
    config, name = load_training_config(recipe, ["train.epochs=3"], variant="a")
    assert name == "a" and config.model.name == "dilated_unet" and config.train.epochs == 3
    with pytest.raises(ConfigError, match="3 variants: pass --variant NAME, one of: a, b, c"):
        load_training_config(recipe)
    with pytest.raises(ConfigError, match="variant 'bb' is not in this recipe; did you mean 'b'"):
        load_training_config(recipe, variant="bb")
    with pytest.raises(ConfigError, match="'ab' combines trained variants"):
        load_training_config(recipe, variant="ab")
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump({**TINY, "store": "s.zarr"}))
    config, name = load_training_config(single)
    assert name == "ctx" and config.data.store == "s.zarr"
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(TINY["base"]))
    assert load_training_config(plain) == (load_config_of(plain), None)
    with pytest.raises(ConfigError, match="not a recipe with variants: drop --variant"):
        load_training_config(plain, variant="a")


def load_config_of(path: Path):
    from partseg.config import load_config

    return load_config(path)


def test_compare_budget_and_folds_give_spread_tests_and_hardware(tmp_path: Path) -> None:
    import yaml

    from partseg.cli import main

    raw = {**TINY, "phantom": {**TINY["phantom"], "cases": 6}, "evaluation": {
        **TINY["evaluation"], "test_fraction": 0.34}}  # fmt: skip
    raw["variants"] = [{"name": "ctx"}, {"name": "flat", "overrides": {"partition.margin": 0}}]
    config = tmp_path / "cmp.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    args = ["compare", str(config), "--out", str(out), "--budget", "1s", "--folds", "2"]
    assert main([*args, "--no-progress"]) == 0
    data = json.loads((out / "report" / "results.json").read_text())
    # every variant and fold trained for its own planned steps of the same budget
    for name in ("ctx", "flat"):
        for fold in (0, 1):
            plan = json.loads((out / f"runs/{name}/fold{fold}/budget.json").read_text())
            assert plan["budget_s"] == 1.0 and plan["total_steps"] >= 1
    costs = {row["variant"]: row for row in data["costs"]}
    assert costs["ctx"]["folds"] == 2 and costs["ctx"]["budget_seconds"] == 1.0
    assert costs["ctx"]["step_seconds"] > 0 and costs["ctx"]["steps"] >= 1
    assert "budget" in data["settings"] and "hardware" in data["settings"]
    wt = [r for r in data["scores"] if r["target"] == "whole_tumor"]
    assert [r["folds"] for r in wt] == [2, 2] and all("dice_std" in r for r in wt)
    # paired tests: the two variants on every target, over the two test cases
    tests = [r for r in data["paired_tests"] if r["target"] == "whole_tumor"]
    assert [(r["a"], r["b"], r["n"]) for r in tests] == [("ctx", "flat", 2)]
    assert all(len(run["cases"]) == 2 for run in data["runs"])
    report = (out / "report" / "report.md").read_text()
    assert "mean ± standard deviation over folds" in report and "Wilcoxon" in report
    assert (out / "report" / "case_dice.png").read_bytes().startswith(b"\x89PNG")
    # out of fold: every training case once, scored by the fold that validated on it
    split = json.loads((out / "split.json").read_text())
    oof = data["out_of_fold"]
    for run in oof["runs"]:
        assert sorted(run["cases"]) == sorted(split["folds"][run["fold"]][1])
    training = sorted(c for train, val in split["folds"] for c in val)
    assert len(training) == 4 and not set(training) & set(split["test"])
    oof_wt = {r["variant"]: r for r in oof["scores"] if r["target"] == "whole_tumor"}
    assert oof_wt["ctx"]["n"] == 4 and 0 <= oof_wt["ctx"]["dice"] <= 1
    ctx_cases = [run["cases"] for run in oof["runs"] if run["variant"] == "ctx"]
    dices = [c[case]["whole_tumor"]["dice"] for c in ctx_cases for case in c]
    assert oof_wt["ctx"]["dice"] == pytest.approx(np.mean(dices))
    oof_tests = [r for r in oof["paired_tests"] if r["target"] == "whole_tumor"]
    assert [(r["a"], r["b"], r["n"]) for r in oof_tests] == [("ctx", "flat", 4)]
    assert "out-of-fold Dice" in report and "Paired tests over the out-of-fold cases" in report
    assert (out / "report" / "case_dice_out_of_fold.png").read_bytes().startswith(b"\x89PNG")
    # scoring the out-of-fold cases or not leaves the test scores' cache valid
    cached = out / "runs" / "ctx" / "fold0" / "evaluation" / "evaluation.json"
    before = cached.stat().st_mtime_ns
    again = ["budget=1s", "folds=2", "evaluation.out_of_fold=false"]
    run_compare(compare_config_from_dict(raw, overrides=again), out, progress=False,
                log=lambda _m: None)  # fmt: skip
    assert cached.stat().st_mtime_ns == before
    assert "out_of_fold" not in json.loads((out / "report" / "results.json").read_text())
    with pytest.raises(ConfigError, match="another config"):  # another budget: not mixed
        run_compare(
            compare_config_from_dict(raw, overrides=["budget=2s", "folds=2"]), out,
            progress=False, log=lambda _m: None,
        )  # fmt: skip


def test_resampled_phantoms_are_scored_on_their_full_resolution_store(tmp_path: Path) -> None:
    from partseg.store import open_store

    voxel = (155 / 16, 240 / 24, 240 / 24)  # a realistic phantom's voxel at this grid, mm
    raw = {**TINY, "ingest": {"spacing": [2 * v for v in voxel]}}
    cfg = compare_config_from_dict(raw)
    outcome = run_compare(cfg, tmp_path / "cmp", progress=False, log=lambda _m: None)
    low = open_store(tmp_path / "cmp/data/phantom.zarr")
    full = open_store(tmp_path / "cmp/data/phantom_full.zarr")
    test = json.loads((tmp_path / "cmp/split.json").read_text())["test"]
    for case_id in test:
        assert all(a < b for a, b in zip(low[case_id].shape, full[case_id].shape, strict=True))
    evaluation = json.loads(
        (tmp_path / "cmp/runs/ctx/fold0/evaluation/evaluation.json").read_text()
    )
    for case_id in test:  # scored on the original grid
        assert evaluation["cases"][case_id]["shape"] == list(full[case_id].shape)
    data = json.loads((outcome.report_dir / "results.json").read_text())
    assert "scored on" in data["settings"]["store"]
    assert np.asarray(data["runs"][0]["confusion"]).sum() == sum(
        int(np.prod(full[c].shape)) for c in test
    )
    with pytest.raises(ConfigError, match=r"unknown config key ingest\.spacin"):
        compare_config_from_dict({**TINY, "ingest": {"spacin": [2, 2, 2]}})


def test_regrid_labels_goes_through_the_original_grid() -> None:
    from partseg.experiments.evaluate import regrid_labels
    from partseg.infer.predictor import ArrayCase

    low_attrs = {"original_shape": [4, 8, 8], "crop_box": {"start": [0, 2, 2], "size": [4, 4, 4]}}
    full_attrs = {"original_shape": [4, 8, 8], "crop_box": {"start": [0, 1, 1], "size": [4, 6, 6]}}
    low = ArrayCase("c", np.zeros((1, 2, 2, 2), np.float32), attrs=low_attrs)  # 2x coarser
    full = ArrayCase("c", np.zeros((1, 4, 6, 6), np.float32), attrs=full_attrs)
    labels = np.zeros((2, 2, 2), np.uint8)
    labels[:, 1, 1] = 2
    out = regrid_labels(labels, low, full, 3)
    assert out.shape == (4, 6, 6)
    expected = np.zeros((4, 8, 8), np.uint8)
    expected[:, 4:6, 4:6] = 2  # the upper quarter of the crop box (2..6) in original voxels
    np.testing.assert_array_equal(out, expected[:, 1:7, 1:7])
    other = ArrayCase("c", full.image, attrs={**full_attrs, "original_shape": [5, 8, 8]})
    with pytest.raises(ConfigError, match="same files"):
        regrid_labels(labels, low, other, 3)


def test_cascade_second_stage_trains_on_the_upsampled_low_res_prediction(tmp_path: Path) -> None:
    from partseg.experiments.evaluate import regrid_labels
    from partseg.experiments.prior import one_hot_prior
    from partseg.infer.pipeline import CasePredictor
    from partseg.infer.settings import PredictSettings
    from partseg.store import open_store

    voxel = (155 / 16, 240 / 24, 240 / 24)
    low_cfg = compare_config_from_dict({**TINY, "ingest": {"spacing": [2 * v for v in voxel]}})
    run_compare(low_cfg, tmp_path / "low", progress=False, log=lambda _m: None)
    low, full = tmp_path / "low/data/phantom.zarr", tmp_path / "low/data/phantom_full.zarr"
    run = tmp_path / "low/runs/ctx/fold0"
    raw = {**TINY, "store": str(full), "prior": {"run": str(run), "store": str(low)}}
    raw["base"] = {**TINY["base"], "model": {**TINY["base"]["model"], "in_channels": 7}}
    lines: list[str] = []
    outcome = run_compare(compare_config_from_dict(raw), tmp_path / "fine", progress=False,
                          log=lines.append)  # fmt: skip
    prior = open_store(tmp_path / "fine/data/prior.zarr")
    assert prior.channels == ("t1", "t1ce", "t2", "flair", "prior_necrotic", "prior_edema",
                              "prior_enhancing")  # fmt: skip
    coarse = CasePredictor.from_checkpoints([run], PredictSettings(nonzero_mask=True))
    lows, fulls = open_store(low), open_store(full)
    for case_id in prior.case_ids:
        image = prior[case_id].read_image()
        labels = coarse.predict(lows[case_id], probabilities=False).labels
        expected = one_hot_prior(regrid_labels(labels, lows[case_id], fulls[case_id], 4), 4)
        np.testing.assert_array_equal(image[4:], expected)
        np.testing.assert_allclose(image[:4], fulls[case_id].read_image(), atol=1e-6)
        np.testing.assert_array_equal(prior[case_id].read_label(), fulls[case_id].read_label())
    data = json.loads((outcome.report_dir / "results.json").read_text())
    assert "prior" in data["settings"] and not any("optimistic" in line for line in lines)
    # a low-res run that trained on a test case is reported
    trained = json.loads((tmp_path / "low/split.json").read_text())["folds"][0][0][0]
    leaky = {**raw, "evaluation": {**raw["evaluation"], "test_cases": [trained]}}
    run_compare(compare_config_from_dict(leaky), tmp_path / "leak", progress=False,
                log=lines.append)  # fmt: skip
    assert any("optimistic" in line and trained in line for line in lines)
    with pytest.raises(ConfigError, match="prior needs both run"):
        compare_config_from_dict({**TINY, "prior": {"run": str(run)}})


def test_every_variant_is_checked_against_the_store_before_any_trains(tmp_path: Path) -> None:
    wide = {"name": "wide", "overrides": {"partition.margin": [40, 40, 40]}}
    cfg = compare_config_from_dict({**TINY, "variants": [*TINY["variants"], wide]})
    with pytest.raises(ConfigError, match=r"variant wide: .*margin.*nothing was trained"):
        run_compare(cfg, tmp_path / "cmp", progress=False, log=lambda _: None)
    assert not (tmp_path / "cmp/runs").exists()  # the first variant did not train first
