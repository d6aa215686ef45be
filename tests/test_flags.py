"""Review flags, each on a case built for it, and the flags in a batch's outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import body_phantom, write_dicom

from l3seg_lib import phantom
from l3seg_lib.imageio.labels import remap_labels
from l3seg_lib.measurement import flags
from l3seg_lib.measurement.flags import SliceContext, review_flags


@pytest.fixture(scope="module")
def slice_():
    spec = next(sp for sp in (phantom.make_patient(i, 3, 256, (1, 1)) for i in range(30))
                if not sp.iv_contrast and not sp.oral_contrast)  # no contrast: nothing to flag
    hu, lab, info = phantom.render_slice(spec, 0, 256)
    labels = remap_labels(lab, phantom.PHANTOM_LABEL_MAP, "phantom")
    return hu, labels, (info["spacing_mm"], info["spacing_mm"])


def _ctx(hu, labels, spacing, probs=None, meta=None, measures=None, level=None):
    if probs is None:
        probs = np.stack([(labels == k).astype(np.float32) for k in range(4)])
    good = {"sma_refined_cm2": 150.0, "muscle_refined_hu_mean": 40.0, "smi_cm2_m2": 50.0}
    return SliceContext(hu, labels, probs, spacing, meta or {"KVP": "120", "SliceThickness": "3"},
                        {**good, **(measures or {})}, level or {"l3_confidence": "high"})


def test_a_clean_slice_has_no_flags(slice_):
    hu, labels, spacing = slice_
    assert review_flags(_ctx(hu, labels, spacing)) == []


def test_body_cut_by_the_field_of_view(slice_):
    hu, labels, spacing = slice_
    cut, cut_labels = hu.copy(), labels.copy()
    cut[:, :100] = -1024.0  # the left of the body outside the field
    cut_labels[:, :100] = 0
    reason = flags.body_cut_by_field_of_view(_ctx(cut[:, 99:], cut_labels[:, 99:], spacing))
    assert reason and "field of view" in reason


@pytest.mark.parametrize("meta, needle", [
    ({"ContrastBolusAgent": "Omnipaque 350", "KVP": "120"}, "IV contrast"),
    ({"KVP": "100"}, "tube voltage 100 kVp"),
    ({"KVP": "120", "SliceThickness": "7"}, "slice thickness 7 mm"),
])
def test_acquisition_flags(slice_, meta, needle):
    hu, labels, spacing = slice_
    assert any(needle in r for r in review_flags(_ctx(hu, labels, spacing, meta=meta)))


def test_aortic_contrast_is_seen_without_the_tag():
    hu, labels = body_phantom(128, 128)
    yy, xx = np.mgrid[:128, :128]
    hu[np.hypot(yy - 64, xx - 70) < 9] = 280.0  # a contrast-filled aorta (about 2.5 cm across)
    reason = flags.iv_contrast(_ctx(hu, labels, (1.0, 1.0), meta={}))
    assert reason and "round vessel at 280 HU" in reason


def test_implausible_numbers(slice_):
    hu, labels, spacing = slice_
    reason = flags.implausible_numbers(_ctx(hu, labels, spacing, measures={"sma_refined_cm2": 12.0}))
    assert reason and "sma_refined_cm2 12.0 outside 40-350" in reason


def test_broken_muscle_ring(slice_):
    hu, labels, spacing = slice_
    broken = labels.copy()
    broken[:, : labels.shape[1] // 2][broken[:, : labels.shape[1] // 2] == 1] = 0  # muscle on one side only
    assert flags.broken_muscle_ring(_ctx(hu, labels, spacing)) is None
    assert "broken muscle ring" in flags.broken_muscle_ring(_ctx(hu, broken, spacing))


def test_low_confidence(slice_):
    hu, labels, spacing = slice_
    unsure = np.full((4, *labels.shape), 0.25, np.float32)
    assert "low model confidence" in flags.low_confidence(_ctx(hu, labels, spacing, probs=unsure))


def test_l3_uncertain(slice_):
    hu, labels, spacing = slice_
    reason = flags.l3_uncertain(_ctx(hu, labels, spacing, level={"l3_confidence": "medium", "l3_notes": "T12 out"}))
    assert reason == "L3 found with medium confidence: T12 out"


def test_flags_in_measurements_and_html(tmp_path, tiny_model):
    hu, _, _ = phantom.render_slice(phantom.make_patient(2, 3, 128, (1, 1)), 0, 128)
    cut = hu.copy()
    cut[:, :50] = -1024.0
    write_dicom(tmp_path / "in" / "cut.dcm", cut[:, 49:], spacing=(2.0, 2.0), patient_id="CUT", KVP="100")
    from l3seg_lib.measurement.batch import MeasureOptions, measure_folder

    res = measure_folder(tmp_path / "in", tiny_model, tmp_path / "out", MeasureOptions(progress=False, dicom=True))
    row = res.measurements.iloc[0]
    assert row["review_required"] and "field of view" in row["review_reasons"] and "100 kVp" in row["review_reasons"]
    assert (tmp_path / "out" / row["dicom_seg"]).is_file() and (tmp_path / "out" / row["dicom_sr"]).is_file()
    assert pd.read_csv(tmp_path / "out" / "measurements.csv")["review_required"].iloc[0]
    assert "Review before use" in (tmp_path / "out" / "patients" / "CUT.html").read_text()
    assert ">review<" in (tmp_path / "out" / "index.html").read_text()
