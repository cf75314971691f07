"""Tests of partseg.phantom and ``partseg phantom``: small shapes, a few seconds in all.

``brats-simple`` tests pin the fast synthetic kind (kept byte for byte as the former ``brats``);
the realistic ``brats`` kind is tested at coarse grids (its BraTS-size case is a slow test).
"""

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
from partseg.phantom.glioma import grow_glioma
from partseg.phantom.template import load_template
from partseg.phantom.warp import draw_warp, grid_spacing, push_away

SMALL = (32, 48, 48)
DEMO = (48, 64, 64)


def _channel(case, name: str) -> np.ndarray:
    return case.image[case.channels.index(name)]


@pytest.mark.parametrize("kind", ["brats", "brats-simple"])
def test_same_seed_same_case_other_seed_other_case(kind):
    first, again = make_case(1, SMALL, seed=7, kind=kind), make_case(1, SMALL, seed=7, kind=kind)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.label, again.label)
    other = make_case(1, SMALL, seed=8, kind=kind)
    assert not np.array_equal(first.image, other.image)
    assert not np.array_equal(first.label, other.label)
    assert not np.array_equal(first.label, make_case(2, SMALL, seed=7, kind=kind).label)


@pytest.mark.parametrize("kind", ["brats", "brats-simple"])
def test_case_types_and_ids(kind):
    case = make_case(4, SMALL, seed=0, kind=kind, prefix="Demo")
    assert case.case_id == "Demo_005"
    assert case.channels == ("t1", "t1ce", "t2", "flair")
    assert case.image.dtype == np.float32 and case.image.shape == (4, *SMALL)
    assert case.label.dtype == np.uint8 and case.label.shape == SMALL
    assert case.affine.shape == (4, 4) and case.affine.dtype == np.float64
    np.testing.assert_array_equal(case.image, np.rint(case.image))  # int16-exact


@pytest.mark.parametrize("kind", ["brats", "brats-simple"])
@pytest.mark.parametrize("shape", [SMALL, DEMO, (20, 28, 24), (16, 16, 16)])
@pytest.mark.parametrize("seed", [0, 3])
def test_every_brats_case_has_all_tumor_labels(shape, seed, kind):
    for index in range(3):
        label = make_case(index, shape, seed=seed, kind=kind).label
        values, counts = np.unique(label, return_counts=True)
        assert values.tolist() == [0, 1, 2, 4]
        assert counts[1:].min() >= 20, f"case {index}: voxels per label {counts.tolist()}"


@pytest.mark.parametrize("kind", ["brats", "brats-simple"])
def test_class_proportions_like_brats(kind):
    labels = [make_case(i, DEMO, seed=11, kind=kind).label for i in range(6)]
    fractions = np.array([[np.mean(lab == v) for v in (0, 1, 2, 4)] for lab in labels])
    background, necrotic, edema, enhancing = fractions.mean(axis=0)
    assert 0.96 < background < 0.995
    assert 0.004 < edema < 0.02
    assert 0.0008 < necrotic < 0.008
    assert 0.0015 < enhancing < 0.008
    assert np.ptp(fractions[:, 3]) > 0  # proportions vary per case


@pytest.mark.parametrize("index", [0, 1, 2])
def test_contrasts_radiologists_expect(index):
    case = make_case(index, DEMO, seed=2, kind="brats-simple")
    tissue = make_tissue(index, DEMO, seed=2, kind="brats-simple")

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


@pytest.mark.parametrize("kind", ["brats", "brats-simple", "aneurysm"])
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
    case = make_case(0, (20, 28, 24), seed=5, kind="brats-simple")
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


@pytest.mark.parametrize("kind", ["brats", "brats-simple"])
def test_same_seed_gives_identical_files(tmp_path, kind):
    first = write_phantoms(tmp_path / "a", 1, SMALL, seed=3, kind=kind, progress=False)[0]
    # a second run with more cases must not change the first case
    second = write_phantoms(tmp_path / "b", 2, SMALL, seed=3, kind=kind, progress=False)[0]
    for path in case_files(first, first.name):
        assert path.read_bytes() == (second / path.name).read_bytes()


def test_cli_writes_cases(tmp_path, capsys):
    out = tmp_path / "phantoms"
    argv = ["phantom", str(out), "--count", "2", "--shape", "20", "28", "24", "--seed", "1"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Phantom_001", "Phantom_002"]
    assert all(is_complete(out / name) for name in ("Phantom_001", "Phantom_002"))
    assert "2 brats cases" in capsys.readouterr().out


def test_cli_rejects_bad_shape(tmp_path, capsys):
    assert main(["phantom", str(tmp_path), "--count", "1", "--shape", "4", "28", "24"]) == 2
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
    brats = [make_case(i, seed=0, kind="brats-simple").label for i in range(3)]
    fractions = np.array([[np.mean(lab == v) for v in (1, 2, 4)] for lab in brats]).mean(0)
    assert 0.0015 < fractions[0] < 0.008 and 0.004 < fractions[1] < 0.02
    assert 0.0015 < fractions[2] < 0.008
    sacs = np.mean([make_case(i, seed=0, kind="aneurysm").label.mean() for i in range(3)])
    assert 2e-6 < sacs < 1e-4


# ---------------------------------------------------------------------------- realistic kind


@pytest.mark.parametrize("index", [0, 1, 2])
def test_realistic_contrasts_radiologists_expect(index):
    case, tissue = make_case(index, DEMO, seed=2), make_tissue(index, DEMO, seed=2)

    def mean(name: str, where: np.ndarray) -> float:
        return float(_channel(case, name)[where].mean())

    white, grey, csf = (tissue == t for t in (Tissue.WHITE, Tissue.GREY, Tissue.CSF))
    edema, necrotic, enhancing = (case.label == v for v in (2, 1, 4))
    assert mean("t1", grey) < 0.85 * mean("t1", white)  # white matter brightest on T1
    assert mean("t2", grey) > 1.2 * mean("t2", white)  # ... darker than grey matter on T2
    assert mean("flair", edema) > 1.5 * mean("flair", white)
    assert mean("t2", edema) > 1.5 * mean("t2", white)
    assert mean("t2", csf) > 1.8 * mean("t2", white)  # bright CSF on T2 ...
    assert mean("flair", csf) < 0.6 * mean("flair", white)  # ... dark on FLAIR
    assert mean("t1ce", enhancing) > 2.0 * mean("t1ce", necrotic)
    assert mean("t1ce", enhancing) > 1.4 * mean("t1ce", white)
    assert mean("t1", necrotic) < 0.6 * mean("t1", white)


def test_realistic_grid_is_the_brats_field_of_view(tmp_path):
    assert grid_spacing((155, 240, 240)) == 1.0 and grid_spacing(DEMO) == 3.75
    case = make_case(0, DEMO, seed=1)
    np.testing.assert_allclose(case.affine, nifti_affine(DEMO, 3.75))
    folder = write_case(case, tmp_path)
    image = nib.load(folder / "Phantom_001_flair.nii.gz")
    assert image.header.get_zooms() == (3.75, 3.75, 3.75)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), case.image[3])
    # the tumour lies in the brain, which fills the middle of the grid in Y and X
    tissue = make_tissue(0, DEMO, seed=1)
    brain = np.isin(tissue, [Tissue.GREY, Tissue.WHITE, Tissue.EDEMA, Tissue.ENHANCING])
    assert np.all(brain[case.label == 4] | (tissue[case.label == 4] == Tissue.NECROSIS))
    centre = np.argwhere(brain).mean(axis=0)
    assert np.all(np.abs(centre[1:] - np.array(DEMO[1:]) / 2) < 6)


def test_glioma_edema_follows_white_matter():
    white = np.zeros((40, 40, 40), np.float32)
    white[:, 17:23, :] = 1.0  # a white matter sheet through the seed, grey matter elsewhere
    grey = 1.0 - white
    glioma = grow_glioma(np.random.default_rng(0), white, grey, white + grey, (20, 20, 20), 0.01)
    edema = np.zeros(white.shape, bool)
    edema[glioma.box] = glioma.edema
    assert edema.sum() >= 20
    assert white[edema].mean() > 0.8  # a sphere of that volume would be mostly grey matter
    necrosis = np.zeros(white.shape, bool)
    necrosis[glioma.box] = glioma.necrosis
    core = necrosis.copy()
    core[glioma.box] |= glioma.enhancing
    assert not (edema & core).any()
    # the enhancing rim surrounds the necrosis: no necrotic voxel touches the edema
    assert not (ndimage.binary_dilation(necrosis) & edema).any()


def test_mass_effect_squeezes_towards_the_tumour_and_spares_the_skull():
    template = load_template(8)
    warp = draw_warp(np.random.default_rng(0), (16, 24, 24), template)
    centre = warp.positions[:, 8, 12, 12].astype(np.float64)
    depth = np.full((16, 24, 24), -30.0, np.float32)  # deep in the brain ...
    depth[:, :, :4] = 5.0  # ... except outside the brain on one side
    pushed = push_away(warp, centre, (8, 12, 12), 40.0, depth, np.random.default_rng(1))
    before = np.linalg.norm(warp.positions - centre[:, None, None, None], axis=0)
    after = np.linalg.norm(pushed.positions - centre[:, None, None, None], axis=0)
    assert np.all(after <= before + 1e-3) and (after < before - 1.0).any()
    np.testing.assert_allclose(pushed.positions[..., :4], warp.positions[..., :4], atol=1e-4)


def test_template_maps_and_hull():
    template = load_template(4)
    assert template.grey.shape == template.distance.shape == template.hull.shape
    assert float(template.grey.min()) >= 0.0 and float(template.white.max()) <= 1.0
    inside = template.distance < 0
    assert 0.1 < inside.mean() < 0.4
    assert np.all(template.hull[inside] < 0)  # the hull holds the brain
    assert len(template.seeds) > 1000
    seeds = np.round(template.index(template.seeds[::500])).astype(int)
    assert template.white[tuple(seeds.T)].mean() > 0.6  # seeds lie in white matter


def test_missing_template_is_a_clear_error(monkeypatch):
    from partseg.phantom import template as template_module

    monkeypatch.setattr(template_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"nilearn.*brats-simple"):
        template_module.template_dir()


def test_cli_kinds(tmp_path, capsys):
    argv = ["phantom", str(tmp_path / "s"), "--count", "1", "--shape", "20", "28", "24"]
    assert main([*argv, "--kind", "brats-simple"]) == 0
    assert "1 brats-simple cases" in capsys.readouterr().out
    simple = make_case(0, (20, 28, 24), kind="brats-simple")
    seg = nib.load(tmp_path / "s" / "Phantom_001" / "Phantom_001_seg.nii.gz")
    np.testing.assert_array_equal(np.asarray(seg.dataobj).transpose(2, 1, 0), simple.label)
    assert main(["phantom", str(tmp_path / "r"), "--count", "1", "--shape", "20", "28", "24"]) == 0
    realistic = nib.load(tmp_path / "r" / "Phantom_001" / "Phantom_001_seg.nii.gz")
    assert realistic.header.get_zooms() == (10.0, 10.0, 10.0)  # 240 mm over X's 24 voxels
    np.testing.assert_array_equal(
        np.asarray(realistic.dataobj).transpose(2, 1, 0), make_case(0, (20, 28, 24)).label
    )


@pytest.mark.slow
def test_realistic_brats_size_case():
    case = make_case(0, seed=0)
    assert case.image.shape == (4, 155, 240, 240) and case.affine[0, 0] == 1.0
    fractions = [float(np.mean(case.label == v)) for v in (1, 2, 4)]
    assert all(0.0003 < f < 0.03 for f in fractions), fractions
    head = case.image[0] > 0
    assert 0.3 < head.mean() < 0.6 and np.all(case.image[:, ~head] == 0)
