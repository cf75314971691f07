"""Evaluate predicted segmentations against ground truth, case by case, without a command line.

:func:`evaluate_folders` is the entry point (``partseg evaluate`` is a thin layer over it). PRED
and GT are each one of:

* a NIfTI file (``.nii`` / ``.nii.gz``): both must then be files, and they form one case, named
  after the GT file;
* a folder (:mod:`~partseg.evaluation.discovery`): a raw dataset in a layout ``partseg ingest``
  knows (BraTS 2017-2021 ``<id>_seg``, BraTS 2023 ``<id>-seg``, MSD / nnU-Net raw
  ``labelsTr/<id>``, or a ``labelsTr`` folder itself), or the NIfTI files directly inside, or,
  when there are none, the ``*_seg`` / ``-seg`` / ``*_pred`` files anywhere below;
* a partseg store (:func:`partseg.store.open_store`), whose label arrays hold class ids.

**Order.** PRED comes first (nnU-Net's ``nnUNetv2_evaluate_folder`` takes GT first): a PRED
that is a raw dataset with scans (or a ``labelsTr`` folder) against a GT that is not, or a GT
that ``partseg predict`` / nnU-Net wrote (or named ``*_pred``) against a PRED that is not, is
refused (:func:`check_order`).

**Case ids.** A NIfTI file's case id is its name without ``.nii.gz`` / ``.nii`` and then without
one trailing ``_seg``, ``-seg`` or ``_pred``: ``BraTS20_Training_001_seg.nii.gz`` and
``BraTS20_Training_001.nii.gz`` are both case ``BraTS20_Training_001``. Store cases keep their
ids. Cases found on one side only are an error listing them, or, with ``allow_missing``, a
warning and are skipped.

**Labels.** NIfTI files hold original label values; they become contiguous class ids by, in
order: an explicit labels map (``0:0,1:1,2:2,4:3``); the ground truth's convention
(:mod:`~partseg.evaluation.conventions`: a BraTS edition with its scans, 2017-2021 4 -> 3 or
2023 as they are; ``dataset.json``; a store's mapping); the label mapping of a store on the
other side; otherwise automatically: BraTS values ({0, 1, 2, 4} with 4 present in some case;
{0, 1, 2, 3} for BraTS 2023 ``-seg`` files) map to the BraTS classes, anything else is taken as
class ids as they are. Predictions use the ground truth's mapping (or ``pred_labels_map``): a
prediction with a value outside the ground truth's label set, such as enhancing tumour 4
against BraTS 2023's 3, is an error naming both sets, the files and the map that fixes it. A
dataset mixing label 4 with labels outside {0, 1, 2, 4} is an error that asks for a labels map
(:class:`LabelPolicy`).

**Spacing** comes from the GT (NIfTI pixdim, reordered to (Z, Y, X), or the store case); HD95
of a class missed or hallucinated is the diagonal of the original image (a store case's
``original_shape``, not its cropped box).

**Seams.** Given the folder of ``<case>_probabilities.zarr`` that ``partseg predict
--save-probabilities --probabilities-format zarr`` writes (float16 (K, Z, Y, X), attribute
``core``), each case gets a ``"seam"`` section (:func:`seam_section`) with the reference-free
``seam_index`` of :mod:`partseg.infer.seams` (1.0 = no seam), and, given the same folder from a
``--partition none`` run, the error against that whole-volume reference (``max_abs``,
``mean_abs``, ``changed_label_share``). :func:`partseg.metrics.summarize` summarises it like the
``classes`` and ``regions`` sections.

Only one case is in memory at a time; probabilities are streamed slab by slab.

**Modules.** :mod:`~partseg.evaluation.discovery` (label files of a folder, per layout),
:mod:`~partseg.evaluation.conventions` (what label values mean, the mismatch error),
:mod:`~partseg.evaluation.sides` (sides, order check, reading labels),
:mod:`~partseg.evaluation.labels` (labels maps, :class:`LabelPolicy`),
:mod:`~partseg.evaluation.seams` (the seam section), :mod:`~partseg.evaluation.lesionwise`
(BraTS lesion-wise metrics from the official package), :mod:`~partseg.evaluation.run` (evaluating),
:mod:`~partseg.evaluation.tables` (table and CSV text), :mod:`~partseg.evaluation.warn`
(warnings). Every public name is re-exported here.
"""

from partseg.evaluation.conventions import Convention, mismatch_error
from partseg.evaluation.discovery import Found, find_files
from partseg.evaluation.labels import LabelPolicy, apply_mapping, make_policy, parse_labels_map
from partseg.evaluation.lesionwise import LesionwiseRun
from partseg.evaluation.run import evaluate_all, evaluate_folders, evaluate_pair, finalize_case
from partseg.evaluation.seams import SeamSources, check_seam_files, probability_path, seam_section
from partseg.evaluation.sides import (
    Side,
    case_id_from_name,
    check_order,
    match_cases,
    max_distance,
    open_side,
    pair_single_files,
    read_labels,
    read_nifti_labels,
)
from partseg.evaluation.tables import csv_rows, format_table, to_csv
from partseg.evaluation.warn import Warn

__all__ = [
    "Convention",
    "Found",
    "LabelPolicy",
    "LesionwiseRun",
    "SeamSources",
    "Side",
    "Warn",
    "apply_mapping",
    "case_id_from_name",
    "check_order",
    "check_seam_files",
    "csv_rows",
    "evaluate_all",
    "evaluate_folders",
    "evaluate_pair",
    "finalize_case",
    "find_files",
    "format_table",
    "make_policy",
    "match_cases",
    "max_distance",
    "mismatch_error",
    "open_side",
    "pair_single_files",
    "parse_labels_map",
    "probability_path",
    "read_labels",
    "read_nifti_labels",
    "seam_section",
    "to_csv",
]
