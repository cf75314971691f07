"""Tests of partseg.phantom and ``partseg phantom``: small shapes, a few seconds in all."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from partseg.cli import main
from partseg.errors import ConfigError
from partseg.phantom import (
    CHANNELS,
    Tissue,
    case_files,
    is_complete,
    make_case,
    make_tissue,
    nifti_affine,
    write_case,
    write_phantoms,
)

SMALL = (32, 48, 48)
DEMO = (48, 64, 64)


def _channel(case, name: str) -> np.ndarray:
    return case.image[case.channels.index(name)]


def test_same_seed_same_case_other_seed_other_case():
    first, again = make_case(1, SMALL, seed=7), make_case(1, SMALL, seed=7)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.label, again.label)
    other = make_case(1, SMALL, seed=8)
    assert not np.array_equal(first.image, other.image)
    assert not np.array_equal(first.label, other.label)
    assert not np.array_equal(first.label, make_case(2, SMALL, seed=7).label)


def test_case_types_and_ids():
    case = make_case(4, SMALL, seed=0, prefix="Demo")
    assert case.case_id == "Demo_005"
    assert case.channels == ("t1", "t1ce", "t2", "flair")
    assert case.image.dtype == np.float32 and case.image.shape == (4, *SMALL)
    assert case.label.dtype == np.uint8 and case.label.shape == SMALL
    assert case.affine.shape == (4, 4) and case.affine.dtype == np.float64
    np.testing.assert_array_equal(case.image, np.rint(case.image))  # int16-exact


@pytest.mark.parametrize("shape", [SMALL, DEMO, (20, 28, 24)])
@pytest.mark.parametrize("seed", [0, 3])
def test_every_brats_case_has_all_tumor_labels(shape, seed):
    for index in range(3):
        label = make_case(index, shape, seed=seed).label
        values, counts = np.unique(label, return_counts=True)
        assert values.tolist() == [0, 1, 2, 4]
        assert counts[1:].min() >= 20, f"case {index}: voxels per label {counts.tolist()}"


def test_class_proportions_like_brats():
    labels = [make_case(i, DEMO, seed=11).label for i in range(6)]
    fractions = np.array([[np.mean(lab == v) for v in (0, 1, 2, 4)] for lab in labels])
    background, necrotic, edema, enhancing = fractions.mean(axis=0)
    assert 0.96 < background < 0.995
    assert 0.004 < edema < 0.02
    assert 0.0015 < necrotic < 0.008
    assert 0.0015 < enhancing < 0.008
    assert np.ptp(fractions[:, 3]) > 0  # proportions vary per case


@pytest.mark.parametrize("index", [0, 1, 2])
def test_contrasts_radiologists_expect(index):
    case, tissue = make_case(index, DEMO, seed=2), make_tissue(index, DEMO, seed=2)

    def mean(name: str, where: np.ndarray) -> float:
        return float(_channel(case, name)[where].mean())

    white, csf = tissue == Tissue.WHITE, tissue == Tissue.CSF
    edema, necrotic, enhancing = (case.label == v for v in (2, 1, 4))
    core = necrotic | enhancing
    assert mean("flair", edema) > 1.5 * mean("flair", white)
    assert mean("t2", edema) > 1.5 * mean("t2", white)
    assert mean("t2", csf) > 2.0 * mean("t2", white)  # bright CSF on T2 ...
    assert mean("flair", csf) < 0.5 * mean("flair", white)  # ... dark on FLAIR
    assert mean("t1ce", enhancing) > 2.0 * mean("t1ce", necrotic)
    assert mean("t1ce", enhancing) > 1.4 * mean("t1ce", white)
    assert mean("t1", core) < 0.8 * mean("t1", white)
    assert mean("t1", necrotic) < 0.5 * mean("t1", white)


@pytest.mark.parametrize("kind", ["brats", "aneurysm"])
def test_background_is_zero_and_head_is_nonzero(kind):
    case, tissue = make_case(0, SMALL, seed=4, kind=kind), make_tissue(0, SMALL, seed=4, kind=kind)
    head = tissue != Tissue.BACKGROUND
    assert 0.1 < head.mean() < 0.6
    for volume in case.image:
        assert np.all(volume[~head] == 0)
        assert np.all(volume[head] >= 1)
    assert np.all(case.label[~head] == 0)


def test_nifti_affine_is_1mm_ras_centred():
    affine = nifti_affine((155, 240, 240))
    np.testing.assert_array_equal(affine[:3, :3], np.eye(3))
    centre = affine @ np.array([119.5, 119.5, 77.0, 1.0])  # voxel (X, Y, Z)
    np.testing.assert_allclose(centre[:3], 0.0)


def test_write_case_brats_layout_reads_back(tmp_path):
    case = make_case(0, (20, 28, 24), seed=5)
    folder = write_case(case, tmp_path)
    assert folder == tmp_path / "Phantom_001"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"Phantom_001_{n}.nii.gz" for n in ("t1", "t1ce", "t2", "flair", "seg"))
    assert [p.name for p in tmp_path.iterdir()] == ["Phantom_001"]  # no partial folder left
    for k, name in enumerate(case.channels):
        image = nib.load(folder / f"Phantom_001_{name}.nii.gz")
        assert image.shape == (24, 28, 20)  # NIfTI (X, Y, Z)
        assert image.header.get_zooms() == (1.0, 1.0, 1.0)
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        np.testing.assert_allclose(image.affine, case.affine)
        np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), case.image[k])
    seg = nib.load(folder / "Phantom_001_seg.nii.gz")
    assert seg.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(seg.dataobj).transpose(2, 1, 0), case.label)


def test_same_seed_gives_identical_files(tmp_path):
    first = write_phantoms(tmp_path / "a", 1, SMALL, seed=3, progress=False)[0]
    # a second run with more cases must not change the first case
    second = write_phantoms(tmp_path / "b", 2, SMALL, seed=3, progress=False)[0]
    for path in case_files(first, first.name):
        assert path.read_bytes() == (second / path.name).read_bytes()


def test_cli_writes_cases(tmp_path, capsys):
    out = tmp_path / "phantoms"
    argv = ["phantom", str(out), "--cases", "2", "--shape", "20", "28", "24", "--seed", "1"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Phantom_001", "Phantom_002"]
    assert all(is_complete(out / name) for name in ("Phantom_001", "Phantom_002"))
    assert "2 brats cases" in capsys.readouterr().out


def test_cli_rejects_bad_shape(tmp_path, capsys):
    assert main(["phantom", str(tmp_path), "--cases", "1", "--shape", "4", "28", "24"]) == 2
    assert "shape" in capsys.readouterr().err


def test_resume_skips_complete_cases_and_redoes_incomplete(tmp_path):
    shape = (20, 28, 24)
    write_phantoms(tmp_path, 1, shape, progress=False)
    marker = tmp_path / "Phantom_001" / "marker.txt"
    marker.write_text("kept")
    stamp = (tmp_path / "Phantom_001" / "Phantom_001_t1.nii.gz").stat().st_mtime_ns
    (tmp_path / "Phantom_002").mkdir()  # an incomplete case: rewritten
    folders = write_phantoms(tmp_path, 2, shape, progress=False)
    assert [f.name for f in folders] == ["Phantom_001", "Phantom_002"]
    assert marker.exists()
    assert (tmp_path / "Phantom_001" / "Phantom_001_t1.nii.gz").stat().st_mtime_ns == stamp
    assert is_complete(tmp_path / "Phantom_002")
    write_phantoms(tmp_path, 1, shape, overwrite=True, progress=False)
    assert not marker.exists() and is_complete(tmp_path / "Phantom_001")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Phantom_001", "Phantom_002"]


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_aneurysm_tiny_sacs_touch_vessels(index):
    case = make_case(index, DEMO, seed=9, kind="aneurysm")
    tissue = make_tissue(index, DEMO, seed=9, kind="aneurysm")
    assert case.channels == CHANNELS["aneurysm"] and case.image.shape == (1, *DEMO)
    assert np.unique(case.label).tolist() == [0, 1]
    assert case.label.mean() < 3e-3  # 1e-5 at the default size, see the slow test
    vessels = tissue == Tissue.VESSEL
    sacs, n_sacs = ndimage.label(case.label)
    assert 1 <= n_sacs <= 3
    for sac in range(1, n_sacs + 1):
        grown = ndimage.binary_dilation(sacs == sac, iterations=1)
        assert (grown & vessels).any(), f"sac {sac} of case {index} floats free"
    tof = case.image[0]
    brain = (tissue == Tissue.GREY) | (tissue == Tissue.WHITE)
    assert tof[vessels].mean() > 2.5 * tof[brain].mean()
    assert tof[case.label == 1].mean() > 2.5 * tof[brain].mean()


def test_aneurysm_files(tmp_path):
    folder = write_phantoms(tmp_path, 1, (20, 28, 24), kind="aneurysm", progress=False)[0]
    assert sorted(p.name for p in folder.iterdir()) == [
        "Phantom_001_seg.nii.gz",
        "Phantom_001_tof.nii.gz",
    ]
    assert is_complete(folder, "aneurysm") and not is_complete(folder, "brats")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"kind": "lungs"}, "kind"),
        ({"shape": (8, 64, 64)}, "shape"),
        ({"shape": (64, 64)}, "shape"),
        ({"seed": -1}, "seed"),
        ({"prefix": "../escape"}, "prefix"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        make_case(0, **{"shape": SMALL, **kwargs})


@pytest.mark.slow
def test_default_size_proportions():
    brats = [make_case(i, seed=0).label for i in range(3)]
    fractions = np.array([[np.mean(lab == v) for v in (1, 2, 4)] for lab in brats]).mean(0)
    assert 0.0015 < fractions[0] < 0.008 and 0.004 < fractions[1] < 0.02
    assert 0.0015 < fractions[2] < 0.008
    sacs = np.mean([make_case(i, seed=0, kind="aneurysm").label.mean() for i in range(3)])
    assert 2e-6 < sacs < 1e-4
