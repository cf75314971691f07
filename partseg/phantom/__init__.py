"""Synthetic BraTS-like and aneurysm-like cases ("phantoms") written as NIfTI.

Three kinds:

* ``kind="brats"`` (realistic): the MNI152 brain template that nilearn ships (grey and white
  matter probability maps, :mod:`~partseg.phantom.template`), deformed per case with the mass
  effect of a glioma grown in white matter: necrotic core (label 1), enhancing rim (4) and
  edema spreading along the white matter (2), BraTS labels. Four channels (t1, t1ce, t2,
  flair) with the tissue contrasts of the literature, a skull and scalp and air outside. Any
  grid: the BraTS field of view of 155 x 240 x 240 mm in isotropic voxels (1 mm at the BraTS
  size, 3.75 mm at 48 x 64 x 64).
* ``kind="brats-simple"``: the fast synthetic kind of the unit tests: an ellipsoidal head
  (scalp and skull shells around a brain of CSF, grey and white matter with two lateral
  ventricles) and a tumor of random position, size and irregular shape, same channels and
  labels; about 98 % background, 1 % edema and 0.3-0.5 % each of labels 1 and 4 over cases,
  as in BraTS 2020.
* ``kind="aneurysm"``: one TOF-MRA-like channel (tof) of bright tortuous vessel tubes on a dark
  brain, with 1-3 tiny saccular blobs attached to vessels, labelled 1 (about 1e-5 of the voxels
  at the default size: the extreme imbalance of the aneurysm challenges).

Every modality carries a smooth multiplicative bias field, Rician noise and a per-case intensity
scale; voxels outside the head are exactly 0 and voxels inside are >= 1, so the non-zero mask
of any channel is the head. Intensities are integer-valued (written as int16 like BraTS).

Case ``index`` draws from a random generator seeded by ``(seed, index)``: the same seed gives
identical files and adding cases never changes the earlier ones.

**Modules.** ``cases`` (:class:`PhantomCase`, identifiers, affine, :func:`make_case`),
``fields`` (smooth random fields), ``anatomy`` (:class:`Tissue` and the synthetic head),
``tumor`` (the synthetic tumor), ``template`` (the MNI152 maps), ``warp`` (per-case
deformation and mass effect), ``glioma`` (the realistic tumour), ``realistic`` (a realistic
case), ``vessels`` (vessels and aneurysm sacs), ``render`` (contrast, bias field, noise) and
``files`` (NIfTI writing, :func:`write_phantoms`). Import the public names from
``partseg.phantom``.

Example:
    >>> case = make_case(0, shape=(32, 48, 48), seed=1)
    >>> case.case_id, case.image.shape, case.channels
    ('Phantom_001', (4, 32, 48, 48), ('t1', 't1ce', 't2', 'flair'))
    >>> sorted(set(case.label.ravel().tolist()))
    [0, 1, 2, 4]
"""

from partseg.phantom.anatomy import Tissue
from partseg.phantom.cases import (
    BRATS_KINDS,
    CHANNELS,
    DEFAULT_SHAPE,
    GENERATOR_VERSION,
    KINDS,
    MIN_EDGE,
    PhantomCase,
    case_files,
    case_id,
    case_rng,
    make_case,
    make_tissue,
    nifti_affine,
)
from partseg.phantom.files import is_complete, write_case, write_phantoms

__all__ = [
    "BRATS_KINDS",
    "CHANNELS",
    "DEFAULT_SHAPE",
    "GENERATOR_VERSION",
    "KINDS",
    "MIN_EDGE",
    "PhantomCase",
    "Tissue",
    "case_files",
    "case_id",
    "case_rng",
    "is_complete",
    "make_case",
    "make_tissue",
    "nifti_affine",
    "write_case",
    "write_phantoms",
]
