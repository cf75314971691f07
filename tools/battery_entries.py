"""The entries of ``tools/battery.py``: one bad input each, grouped by command.

Placeholders in the command lines: ``{d}`` the entry's folder; ``{s}``, ``{r}``, ``{src}``,
``{b}``, ``{m}``, ``{p}`` private copies of the store, the trained run, the raw NumPy dataset,
the BraTS and MSD folders and the prediction folder; ``{store}``, ``{run}``, ``{raw}``,
``{pred}``, ``{gt}``, ``{cmp}`` the shared read-only fixtures; ``{file}`` a regular file;
``{tiny}`` ``configs/tiny.yaml``.
"""

from __future__ import annotations

import numpy as np
from battery import (
    Ctx,
    Entry,
    call,
    delete_chunk,
    drop_json,
    edit_json,
    lock,
    nifti,
    npy,
    remove,
    symlink,
    truncate,
    write,
    write_compare,
    write_numpy_cases,
)

S = "{s}/zarr.json"  # the private store's index
C0 = "{s}/cases/case0/zarr.json"  # a case's metadata
TRAIN = ["train", "{tiny}", "--out", "{d}/run"]
PRED = ["predict", "{run}", "--out", "{d}/out"]
SHAPE = (16, 16, 16)


def E(name: str, argv: list[str], *setups, **kwargs) -> Entry:
    return Entry(name, argv[0], argv, tuple(setups), **kwargs)


def phantom() -> list[Entry]:
    base = ["phantom", "{d}/o", "--shape", "16", "16", "16"]
    return [
        E("phantom_cases_zero", [*base, "--count", "0"]),
        E("phantom_cases_negative", [*base, "--count", "-3"]),
        E("phantom_cases_text", [*base, "--count", "many"]),
        E("phantom_shape_zero", ["phantom", "{d}/o", "--count", "1", "--shape", "0", "8", "8"]),
        E(
            "phantom_shape_huge",
            ["phantom", "{d}/o", "--count", "1", "--shape", "99999", "99999", "99999"],
        ),
        E("phantom_seed_negative", [*base, "--count", "1", "--seed", "-1"]),
        E(
            "phantom_out_under_file",
            ["phantom", "{file}/o", "--count", "1", "--shape", "16", "16", "16"],
        ),
        E(
            "phantom_out_is_file",
            ["phantom", "{file}", "--count", "1", "--shape", "16", "16", "16"],
        ),
        E(
            "phantom_prefix_escape",
            [*base, "--count", "1", "--prefix", "../x"],
            absent=("{d}/x_001",),
        ),
        E("phantom_prefix_separator", [*base, "--count", "1", "--prefix", "a/b"]),
        E("phantom_prefix_hidden", [*base, "--count", "1", "--prefix", ".tmp"]),
        E("phantom_kind_unknown", [*base, "--count", "1", "--kind", "liver"]),
        E("phantom_full_disk", [*base, "--count", "1"], patch="enospc_nibabel"),
    ]


def ingest() -> list[Entry]:
    new = "{d}/new.zarr"
    raw = ["ingest", "{raw}", new, "--no-progress"]
    odd = np.ones((2, *SHAPE), np.float32)
    return [
        E("ingest_src_missing", ["ingest", "{d}/nothing", new]),
        E("ingest_src_empty_folder", ["ingest", "{d}/empty", new], write("{d}/empty/.keep", "")),
        E("ingest_src_unknown_files", ["ingest", "{d}/txt", new], write("{d}/txt/a.txt", "x")),
        E("ingest_src_is_a_text_file", ["ingest", "{file}", new]),
        E("ingest_store_under_file", ["ingest", "{raw}", "{file}/s.zarr"]),
        E("ingest_store_is_a_file", ["ingest", "{raw}", "{file}"]),
        E(
            "ingest_store_foreign_folder",
            ["ingest", "{raw}", "{d}/other"],
            write("{d}/other/notes.txt", "mine"),
            keep=("{d}/other",),
        ),
        E("ingest_store_newer_format", ["ingest", "{raw}", "{s}"], edit_json(S, format_version=9)),
        E("ingest_store_index_garbage", ["ingest", "{raw}", "{s}"], write(S, "{not json")),
        E("ingest_store_locked", ["ingest", "{raw}", "{s}"], lock("{s}")),
        E(
            "ingest_store_locked_other_host",
            ["ingest", "{raw}", "{s}"],
            lock("{s}", live=False, host="elsewhere.example"),
        ),
        E("ingest_resume_other_settings", ["ingest", "{raw}", "{s}", "--crop", "none"]),
        E("ingest_resume_other_labels", ["ingest", "{raw}", "{s}", "--labels", "0", "1", "2", "3"]),
        E("ingest_workers_negative", [*raw, "--workers", "-1"]),
        E("ingest_workers_zero", [*raw, "--workers", "0"]),
        E("ingest_clevel_zero", [*raw, "--clevel", "0"]),
        E("ingest_clevel_twelve", [*raw, "--clevel", "12"]),
        E("ingest_chunks_zero", [*raw, "--chunks", "0", "8", "8"]),
        E("ingest_chunks_two_values", [*raw, "--chunks", "8", "8"]),
        E("ingest_spacing_negative", [*raw, "--spacing", "1", "-1", "1"]),
        E("ingest_spacing_nan", [*raw, "--spacing", "nan", "1", "1"]),
        E("ingest_spacing_inf", [*raw, "--spacing", "inf", "1", "1"]),
        E("ingest_channels_per_chunk_zero", [*raw, "--channels-per-chunk", "0"]),
        E("ingest_labels_negative", [*raw, "--labels", "0", "-3"]),
        E("ingest_label_names_malformed", [*raw, "--label-names", "aneurysm"]),
        E("ingest_layout_unknown", [*raw, "--layout", "dicom"]),
        E("ingest_dtype_unknown", [*raw, "--dtype", "int8"]),
        E("ingest_layout_mismatch", [*raw, "--layout", "brats"]),
        E(
            "ingest_nan_voxels",
            ["ingest", "{src}", new],
            npy("{src}/case1.npy", np.full((2, *SHAPE), np.nan, np.float32)),
        ),
        E(
            "ingest_inf_voxels",
            ["ingest", "{src}", new],
            call(lambda c: _poke(c.src / "case2.npy", np.inf)),
        ),
        E(
            "ingest_label_shape_mismatch",
            ["ingest", "{src}", new],
            npy("{src}/case1_label.npy", np.zeros((8, 8, 8), np.uint8)),
        ),
        E(
            "ingest_label_not_integer",
            ["ingest", "{src}", new],
            npy("{src}/case1_label.npy", np.full(SHAPE, 0.5, np.float32)),
        ),
        E("ingest_label_undeclared_value", ["ingest", "{src}", new, "--labels", "0", "1"]),
        E(
            "ingest_image_all_zero",
            ["ingest", "{src}", new],
            npy("{src}/case1.npy", np.zeros((2, *SHAPE), np.float32)),
        ),
        E("ingest_image_1d", ["ingest", "{src}", new], npy("{src}/case1.npy", np.ones(10))),
        E(
            "ingest_image_5d",
            ["ingest", "{src}", new],
            npy("{src}/case1.npy", np.ones((1, 2, 4, 4, 4), np.float32)),
        ),
        E(
            "ingest_channel_count_differs",
            ["ingest", "{src}", new],
            npy("{src}/case1.npy", np.ones((3, *SHAPE), np.float32)),
        ),
        E("ingest_npy_truncated", ["ingest", "{src}", new], truncate("{src}/case1.npy")),
        E("ingest_npy_garbage", ["ingest", "{src}", new], write("{src}/case1.npy", b"garbage")),
        E("ingest_npy_and_npz_same_id", ["ingest", "{src}", new], npy("{src}/case1.npz", odd)),
        E(
            "ingest_case_id_too_long",
            ["ingest", "{src}", new],
            npy("{src}/" + "x" * 220 + ".npy", odd),
        ),
        E("ingest_case_id_control_char", ["ingest", "{src}", new], npy("{src}/bad\tid.npy", odd)),
        E(
            "ingest_brats_truncated_nifti",
            ["ingest", "{b}", new],
            truncate("{b}/B_002/B_002_t2.nii.gz"),
        ),
        E(
            "ingest_brats_missing_modality",
            ["ingest", "{b}", new],
            remove("{b}/B_002/B_002_flair.nii.gz"),
        ),
        E(
            "ingest_brats_folder_plus_flat",
            ["ingest", "{b}", new],
            call(lambda c: _copy(c.b / "B_001" / "B_001_t1.nii.gz", c.b / "B_001_t1.nii.gz")),
        ),
        E(
            "ingest_brats_nii_and_niigz",
            ["ingest", "{b}", new],
            call(lambda c: _gunzip(c.b / "B_001" / "B_001_seg.nii.gz")),
        ),
        E(
            "ingest_brats_label_shape_mismatch",
            ["ingest", "{b}", new],
            nifti("{b}/B_001/B_001_seg.nii.gz", np.zeros((4, 4, 4), np.int16)),
        ),
        E(
            "ingest_brats_symlink_loop",
            ["ingest", "{b}", new],
            call(
                lambda c: (
                    (c.b / "B_001" / "B_001_t2.nii.gz").unlink()
                    or (c.b / "B_001" / "B_001_t2.nii.gz").symlink_to("B_001_t2.nii.gz")
                )
            ),
        ),
        E("ingest_msd_json_garbage", ["ingest", "{m}", new], write("{m}/dataset.json", "{x")),
        E(
            "ingest_msd_no_channels",
            ["ingest", "{m}", new],
            write("{m}/dataset.json", '{"labels": {"0": "bg"}}'),
        ),
        E(
            "ingest_msd_region_labels",
            ["ingest", "{m}", new],
            write(
                "{m}/dataset.json",
                '{"channel_names": {"0": "a", "1": "b"}, '
                '"labels": {"background": 0, "whole": [1, 2]}}',
            ),
        ),
        E(
            "ingest_msd_dotdot_case",
            ["ingest", "{m}", new],
            call(lambda c: _copy(c.m / "imagesTr/p_00.nii.gz", c.m / "imagesTr/..case2.nii.gz")),
        ),
        E("ingest_hdf5_garbage", ["ingest", "{d}/h", new], write("{d}/h/c.h5", b"not hdf5")),
        E("ingest_full_disk", [*raw], patch="enospc_zarr", absent=("{d}/new.zarr/cases/case0",)),
        # recoveries: exit 0, nothing outside touched
        E(
            "ingest_stale_lock_recovered",
            ["ingest", "{raw}", "{s}", "--chunks", "8", "8", "8"],
            lock("{s}", live=False),
            expect="ok",
            mutates=True,
            stderr="no longer running",
        ),
        E(
            "ingest_symlinked_case_not_followed",
            ["ingest", "{raw}", "{s}", "--chunks", "8", "8", "8"],
            symlink("{s}/cases/case9", "{d}/outside"),
            expect="ok",
            mutates=True,
            keep=("{d}/outside",),
        ),
    ]


def info() -> list[Entry]:
    i = ["info", "{s}"]
    return [
        E("info_store_missing", ["info", "{d}/nothing.zarr"]),
        E("info_store_is_a_file", ["info", "{file}"]),
        E("info_store_foreign_folder", ["info", "{d}/f"], write("{d}/f/x.txt", "x")),
        E("info_index_escape_absolute", i, edit_json(S, case_ids=["/any/where/ESCAPE"])),
        E("info_index_escape_dotdot", i, edit_json(S, case_ids=["case0", "../x"])),
        E("info_index_ids_not_a_list", i, edit_json(S, case_ids="case0")),
        E("info_index_ids_duplicated", i, edit_json(S, case_ids=["case0", "case0"])),
        E("info_index_ids_not_strings", i, edit_json(S, case_ids=[1, 2])),
        E("info_index_chunks_zero", i, edit_json(S, chunks=[0, 8, 8])),
        E("info_index_mapping_garbage", i, edit_json(S, label_mapping=[["a"]])),
        E("info_index_garbage", i, write(S, "\x00\x01")),
        E("info_index_newer_format", i, edit_json(S, format_version=7)),
        E("info_index_lists_missing_case", i, remove("{s}/cases/case2")),
        E("info_case_json_garbage", i, write(C0, "{truncated")),
        E("info_case_json_no_shape", i, drop_json(C0, "shape")),
        E("info_case_shape_negative", i, edit_json(C0, shape=[-16, 16, 16])),
        E("info_case_shape_huge", i, edit_json(C0, shape=[2**30, 16, 16])),
        E("info_case_spacing_zero", i, edit_json(C0, spacing=[0, 1, 1])),
        E("info_case_counts_garbage", i, edit_json(C0, voxel_counts={"a": "b"})),
        E("info_label_chunk_deleted", i, delete_chunk("label")),
        E("info_image_chunk_deleted", i, delete_chunk("image")),
        E("info_image_meta_garbage", i, write("{s}/cases/case1/image/zarr.json", "[]")),
        E("info_image_shape_mismatch", i, edit_json(C0, shape=[8, 16, 16])),
    ]


def plan() -> list[Entry]:
    return [
        E("plan_config_missing", ["plan", "{d}/none.yaml", "--gpu-mem", "4GiB"]),
        E("plan_gpu_mem_garbage", ["plan", "{tiny}", "--gpu-mem", "lots"]),
        E("plan_gpu_mem_zero", ["plan", "{tiny}", "--gpu-mem", "0GiB", "--device", "cpu"]),
        E("plan_gpu_mem_negative", ["plan", "{tiny}", "--gpu-mem", "-4GiB"]),
        E("plan_unknown_key", ["plan", "{tiny}", "--gpu-mem", "4GiB", "model.widht=4"]),
    ]


def train() -> list[Entry]:
    st = "data.store={store}"
    return [
        E("train_config_missing", ["train", "{d}/none.yaml", "--out", "{d}/run", st]),
        E("train_recipe_unknown", ["train", "nosuchrecipe", "--out", "{d}/run", st]),
        E(
            "train_yaml_syntax",
            ["train", "{d}/c.yaml", "--out", "{d}/run", st],
            write("{d}/c.yaml", "model: [unclosed\n"),
        ),
        E(
            "train_yaml_not_mapping",
            ["train", "{d}/c.yaml", "--out", "{d}/run", st],
            write("{d}/c.yaml", "- a\n- b\n"),
        ),
        E(
            "train_yaml_python_tag",
            ["train", "{d}/c.yaml", "--out", "{d}/run", st],
            write("{d}/c.yaml", "model: !!python/object/apply:os.system ['true']\n"),
        ),
        E("train_unknown_key", [*TRAIN, st, "train.epochz=1"]),
        E("train_unknown_section", [*TRAIN, st, "trian.epochs=1"]),
        E("train_wrong_type", [*TRAIN, st, "train.epochs=abc"]),
        E("train_negative_epochs", [*TRAIN, st, "train.epochs=-1"]),
        E("train_override_without_value", [*TRAIN, st, "train.epochs"]),
        E("train_core_zero", [*TRAIN, st, "partition.core=[0,0,0]"]),
        E("train_margin_negative", [*TRAIN, st, "partition.margin=[-1,2,2]"]),
        E("train_margin_wider_than_volume", [*TRAIN, st, "partition.margin=[64,2,2]"]),
        E("train_store_not_set", [*TRAIN]),
        E("train_store_missing", [*TRAIN, "data.store={d}/none.zarr"]),
        E("train_store_foreign", [*TRAIN, "data.store={d}/f"], write("{d}/f/x.txt", "x")),
        E("train_in_channels_mismatch", [*TRAIN, st, "model.in_channels=4"]),
        E("train_out_channels_mismatch", [*TRAIN, st, "model.out_channels=5"]),
        E("train_out_under_file", ["train", "{tiny}", "--out", "{file}/run", st]),
        E("train_fold_negative", [*TRAIN, st, "--fold", "-1"]),
        E("train_fold_too_large", [*TRAIN, st, "--fold", "9"]),
        E("train_gpu_mem_garbage", [*TRAIN, st, "--gpu-mem", "lots"]),
        E("train_resume_without_run", [*TRAIN, st, "--resume"]),
        E("train_rerun_other_config", ["train", "{tiny}", "--out", "{r}", st, "optim.lr=0.5"]),
        E(
            "train_resume_truncated_last",
            ["train", "{tiny}", "--out", "{r}", st, "--resume"],
            truncate("{r}/checkpoints/last.pt"),
        ),
        E(
            "train_resume_foreign_pt",
            ["train", "{tiny}", "--out", "{r}", st, "--resume"],
            call(lambda c: _torch_save(c.r / "checkpoints" / "last.pt")),
        ),
        E(
            "train_resume_other_model",
            ["train", "{tiny}", "--out", "{r}", st, "--resume", "model.base_width=8"],
        ),
        E("train_run_locked", ["train", "{tiny}", "--out", "{r}", st, "--resume"], lock("{r}")),
        E("train_label_chunk_deleted", [*TRAIN, "data.store={s}"], delete_chunk("label")),
        E("train_image_chunk_deleted", [*TRAIN, "data.store={s}"], delete_chunk("image")),
        E("train_case_json_garbage", [*TRAIN, "data.store={s}"], write(C0, "{")),
        E(
            "train_full_disk_on_checkpoint",
            ["train", "{tiny}", "--out", "{r}", st, "--resume", "train.epochs=2"],
            patch="enospc_checkpoint",
            mutates=True,
            keep=("{r}/checkpoints/last.pt",),
        ),
    ]


def cv() -> list[Entry]:
    st = "data.store={store}"
    return [
        E("cv_folds_one", ["cv", "{tiny}", "--folds", "1", "--out", "{d}/cv", st]),
        E("cv_folds_negative", ["cv", "{tiny}", "--folds", "-2", "--out", "{d}/cv", st]),
        E("cv_folds_more_than_cases", ["cv", "{tiny}", "--folds", "9", "--out", "{d}/cv", st]),
        E("cv_out_under_file", ["cv", "{tiny}", "--folds", "2", "--out", "{file}/cv", st]),
        E("cv_locked", ["cv", "{tiny}", "--folds", "2", "--out", "{d}/cv", st], lock("{d}/cv")),
        E(
            "cv_store_missing",
            ["cv", "{tiny}", "--folds", "2", "--out", "{d}/cv", "data.store={d}/none.zarr"],
        ),
    ]


def compare() -> list[Entry]:
    def config(*variants: str, **extra) -> callable:
        def setup(c: Ctx) -> None:
            import yaml

            names = [c.format(v) if v.startswith("{d}") else v for v in variants]
            path = write_compare(c.d / "cmp.yaml", c.fx["store"], names)
            data = yaml.safe_load(path.read_text())
            data.update(extra)
            path.write_text(yaml.safe_dump(data))

        return setup

    run = ["compare", "{d}/cmp.yaml", "--out", "{d}/out", "--no-progress"]
    return [
        E("compare_variant_absolute", run, config("{d}/ESCAPE"), absent=("{d}/ESCAPE",)),
        E(
            "compare_variant_real_absolute",
            run,
            config("/any/where/ESCAPE"),
            absent=("/any/where",),
        ),
        E("compare_variant_dotdot", run, config("../up"), absent=("{d}/up",)),
        E("compare_variant_newline", run, config("a\nb")),
        E("compare_variant_too_long", run, config("v" * 250)),
        E("compare_variant_hidden", run, config(".hidden")),
        E(
            "compare_ensemble_escape",
            run,
            config("a", ensembles=[{"name": "../ens", "members": ["a"]}]),
        ),
        E("compare_duplicate_names", run, config("a", "a")),
        E("compare_no_variants", run, config()),
        E("compare_unknown_top_key", run, config("a", colour="blue")),
        E(
            "compare_cascade_unknown_member",
            run,
            config("a", cascades=[{"name": "c", "coarse": "a", "fine": "zz"}]),
        ),
        E("compare_test_fraction_two", run, config("a", evaluation={"test_fraction": 2})),
        E("compare_yaml_syntax", run, write("{d}/cmp.yaml", "variants: [")),
        E("compare_config_missing", ["compare", "{d}/none.yaml", "--out", "{d}/out"]),
        E(
            "compare_store_foreign",
            [*run, "--store", "{d}/f"],
            config("a"),
            write("{d}/f/x.txt", "x"),
        ),
        E("compare_out_under_file", ["compare", "{cmp}", "--out", "{file}/out"]),
        E("compare_locked", ["compare", "{cmp}", "--out", "{d}/out"], lock("{d}/out")),
    ]


def predict() -> list[Entry]:
    out = ["--out", "{d}/out"]
    return [
        E("predict_model_missing", ["predict", "{d}/none", "--store", "{store}", *out]),
        E("predict_model_dir_without_checkpoints", ["predict", "{d}", "--store", "{store}", *out]),
        E(
            "predict_checkpoint_truncated",
            ["predict", "{r}/checkpoints/last.pt", "--store", "{store}", *out],
            truncate("{r}/checkpoints/last.pt"),
            call(lambda c: _rm(c.r / "checkpoints/best.pt")),
        ),
        E(
            "predict_checkpoint_foreign",
            ["predict", "{d}/f.pt", "--store", "{store}", *out],
            call(lambda c: _torch_save(c.d / "f.pt")),
        ),
        E("predict_checkpoint_text", ["predict", "{file}", "--store", "{store}", *out]),
        E("predict_store_missing", [*PRED, "--store", "{d}/none.zarr"]),
        E(
            "predict_store_escape_id",
            [*PRED, "--store", "{s}"],
            edit_json(S, case_ids=["{d}/ESCAPE"]),
            absent=("{d}/ESCAPE.nii.gz",),
        ),
        E(
            "predict_store_dotdot_id",
            [*PRED, "--store", "{s}"],
            edit_json(S, case_ids=["../x"]),
            absent=("{d}/x.nii.gz",),
        ),
        E("predict_case_unknown", [*PRED, "--store", "{store}", "--cases", "nosuchcase"]),
        E(
            "predict_out_under_file",
            ["predict", "{run}", "--store", "{store}", "--out", "{file}/out"],
        ),
        E("predict_case_json_garbage", [*PRED, "--store", "{s}"], write(C0, "{")),
        E("predict_image_chunk_deleted", [*PRED, "--store", "{s}"], delete_chunk("image", "case0")),
        E(
            "predict_channels_mismatch",
            [*PRED, "--store", "{d}/three.zarr"],
            call(_three_channel_store),
        ),
        E("predict_batch_zero", [*PRED, "--store", "{store}", "--batch", "0"]),
        E("predict_margin_garbage", [*PRED, "--store", "{store}", "--margin", "lots"]),
        E(
            "predict_device_tpu",
            [*PRED, "--store", "{store}", "--device", "tpu"],
            depends="pipeline",
        ),
        E("predict_out_locked", [*PRED, "--store", "{store}"], lock("{d}/out"), depends="pipeline"),
        E(
            "predict_full_disk_on_export",
            [*PRED, "--store", "{store}", "--cases", "case0"],
            patch="enospc_atomic",
            absent=("{d}/out/case0.nii.gz",),
        ),
    ]


def evaluate() -> list[Entry]:
    return [
        E("evaluate_pred_missing", ["evaluate", "{d}/none", "{gt}"]),
        E("evaluate_gt_missing", ["evaluate", "{pred}", "{d}/none"]),
        E("evaluate_pred_empty_folder", ["evaluate", "{d}/e", "{gt}"], write("{d}/e/.keep", "")),
        E(
            "evaluate_no_matching_cases",
            ["evaluate", "{p}", "{gt}"],
            call(lambda c: [f.rename(f.with_name("z" + f.name)) for f in c.p.iterdir()]),
        ),
        E(
            "evaluate_shape_mismatch",
            ["evaluate", "{p}", "{gt}"],
            nifti("{p}/c1.nii.gz", np.zeros((4, 4, 4), np.int16)),
        ),
        E(
            "evaluate_unexpected_label_9",
            ["evaluate", "{p}", "{gt}"],
            call(lambda c: _relabel(c.p / "c1.nii.gz", 9)),
        ),
        E(
            "evaluate_negative_label",
            ["evaluate", "{p}", "{gt}"],
            call(lambda c: _relabel(c.p / "c2.nii.gz", -1)),
        ),
        E(
            "evaluate_float_label",
            ["evaluate", "{p}", "{gt}"],
            nifti("{p}/c1.nii.gz", np.full((6, 8, 8), 0.5, np.float32)),
        ),
        E(
            "evaluate_corrupt_nifti",
            ["evaluate", "{p}", "{gt}"],
            write("{p}/c1.nii.gz", b"\x1f\x8b garbage"),
        ),
        E("evaluate_json_under_file", ["evaluate", "{pred}", "{gt}", "--json", "{file}/m.json"]),
        E("evaluate_csv_under_file", ["evaluate", "{pred}", "{gt}", "--csv", "{file}/m.csv"]),
        E(
            "evaluate_json_full_disk",
            ["evaluate", "{pred}", "{gt}", "--json", "{d}/m.json"],
            patch="enospc_atomic",
            absent=("{d}/m.json",),
        ),
        E("evaluate_labels_map_garbage", ["evaluate", "{pred}", "{gt}", "--labels-map", "a:b"]),
        E("evaluate_labels_map_gap", ["evaluate", "{pred}", "{gt}", "--labels-map", "0:0,1:5"]),
        E("evaluate_one_class_name", ["evaluate", "{pred}", "{gt}", "--classes", "bg"]),
        E(
            "evaluate_seam_reference_alone",
            ["evaluate", "{pred}", "{gt}", "--seam-reference", "{d}"],
        ),
        E("evaluate_store_chunk_deleted", ["evaluate", "{s}", "{store}"], delete_chunk("label")),
        E(
            "evaluate_store_escape_id",
            ["evaluate", "{s}", "{store}"],
            edit_json(S, case_ids=["../case0"]),
        ),
    ]


def demo() -> list[Entry]:
    return [
        E("demo_out_under_file", ["demo", "--quick", "--out", "{file}/demo", "--no-progress"]),
        E("demo_out_locked", ["demo", "--quick", "--out", "{d}/demo"], lock("{d}/demo")),
    ]


def all_entries() -> list[Entry]:
    """Every entry, in command order."""
    groups = (phantom, ingest, info, plan, train, cv, compare, predict, evaluate, demo)
    return [entry for group in groups for entry in group()]


# ---------------------------------------------------------------------------- helpers


def _poke(path, value: float) -> None:
    array = np.load(path)
    array.flat[7] = value
    np.save(path, array)


def _copy(src, dest) -> None:
    import shutil

    shutil.copyfile(src, dest)


def _rm(path) -> None:
    path.unlink(missing_ok=True)


def _gunzip(path) -> None:
    import gzip

    path.with_name(path.name[: -len(".gz")]).write_bytes(gzip.decompress(path.read_bytes()))


def _torch_save(path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weights": torch.zeros(3)}, path)


def _relabel(path, value: int) -> None:
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asarray(image.dataobj).astype(np.int16)
    data.flat[0] = value
    nib.save(nib.Nifti1Image(data, image.affine), str(path))


def _three_channel_store(ctx: Ctx) -> None:
    from partseg.store.ingest import IngestSettings, ingest

    raw = ctx.d / "raw3"
    write_numpy_cases(raw, 2)
    for npy_file in raw.glob("case?.npy"):
        np.save(npy_file, np.concatenate([np.load(npy_file), np.load(npy_file)[:1]]))
    ingest(raw, ctx.d / "three.zarr", IngestSettings(chunks=(8, 8, 8)), progress=False)
