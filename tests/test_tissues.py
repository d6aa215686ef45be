"""The tissue table (l3seg_lib.tissues): consistent, the only place the class vocabulary is
written, and its HU ranges and IMAT rule used the same way by the CSV, the .tag and the SEG."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import body_phantom, paint_muscle_square, write_dicom
from PIL import Image

from l3seg_lib import tissues as T
from l3seg_lib.config import CompositionConfig, params_from_dict
from l3seg_lib.errors import L3SegConfigError
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.measurement.orchestration import measure_folder

SMALL = {"min_matrix": 8, "min_fov_mm": 10.0}
"""MeasureOptions lowered to the floor for the small test phantoms (64 px of 0.7-0.8 mm), below the
64 px / 150 mm a real CT slice at L3 needs (what ``measure`` applies by default)."""

PACKAGE = Path(__file__).resolve().parents[1] / "l3seg_lib"
PARTIAL = {"muscle": (-30.0, 150.0)}


def test_table_is_consistent():
    assert T.CLASS_NAMES == ("background", "muscle", "sat", "vat") and T.TISSUES == T.CLASS_NAMES[1:]
    assert [t.label for t in T.CLASSES] == [1, 2, 3] and T.BACKGROUND == 0 and T.N_CLASSES == 4
    for field in ("label", "key", "name", "tag", "rgb", "seg_label", "seg_code"):
        values = [getattr(t, field) for t in T.ALL_TISSUES]
        assert len(set(values)) == len(values), f"{field} not unique: {values}"
    assert T.BACKGROUND not in [t.label for t in T.ALL_TISSUES] and 0 not in [t.tag for t in T.ALL_TISSUES]
    for t in T.ALL_TISSUES:
        lo, hi = t.hu_range
        assert lo < hi and T.DEFAULT_HU_RANGES[t.key] == t.hu_range
        assert len(t.rgb) == 3 and all(0 <= c <= 255 for c in t.rgb) and t.hex == "#%02x%02x%02x" % t.rgb
        assert t.seg_code.scheme in ("SCT", T.PRIVATE_SCHEME) and t.seg_code.value and t.seg_code.meaning
    assert (T.IMAT.tag, T.IMAT.segment_number) == (2, 4) and T.IMAT not in T.CLASSES
    assert T.SLICE_O_MATIC_TAGS == {"background": [0], "muscle": [1, 2], "sat": [7], "vat": [5]}
    assert T.CLASS_TO_TAG == {1: 1, 2: 7, 3: 5}
    # the Alberta protocol (Mourtzakis 2008), as config and measure use it
    assert dict(T.DEFAULT_HU_RANGES) == {"muscle": (-29.0, 150.0), "sat": (-190.0, -30.0),
                                         "vat": (-150.0, -50.0), "imat": (-190.0, -30.0)}
    assert CompositionConfig().hu_ranges == dict(T.DEFAULT_HU_RANGES)


def test_complete_hu_ranges_keeps_the_defaults_not_given():
    full = T.complete_hu_ranges(PARTIAL)
    assert full["muscle"] == (-30.0, 150.0) and all(full[k] == T.DEFAULT_HU_RANGES[k] for k in ("sat", "vat", "imat"))
    assert T.complete_hu_ranges(None) == dict(T.DEFAULT_HU_RANGES)
    with pytest.raises(ValueError, match="unknown tissue"):
        T.complete_hu_ranges({"musle": (0, 1)})
    with pytest.raises(ValueError, match="low < high"):
        T.complete_hu_ranges({"imat": (10, -10)})
    comp = params_from_dict({"composition": {"hu_ranges": {"muscle": [-30, 150]}}}).composition
    assert comp.hu_ranges["imat"] == (-190.0, -30.0) and comp.hu_ranges["muscle"] == (-30.0, 150.0)
    with pytest.raises(L3SegConfigError, match="composition.hu_ranges: unknown tissue"):
        params_from_dict({"composition": {"hu_ranges": {"fat": [-190, -30]}}})


def test_imat_rule():
    labels = np.array([[1, 1, 1, 2, 0]])
    hu = np.array([[-100.0, 40.0, -30.0, -100.0, -100.0]])
    assert T.imat_mask(labels, hu).tolist() == [[True, False, True, False, False]]
    assert T.imat_mask(labels, hu, PARTIAL).tolist() == [[True, False, True, False, False]]  # IMAT default kept
    assert T.imat_mask(labels, hu, {"imat": (-150.0, -50.0)}).tolist() == [[True, False, False, False, False]]
    assert T.tag_map(labels, hu).tolist() == [[2, 1, 2, 7, 0]]
    assert [m.sum() for m in T.segment_masks(labels, hu)] == [3, 1, 0, 2]


def _muscle_with_fat(rows: int = 64, cols: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """body_phantom's HU and classes with fat streaks (-100 HU) in the muscle ring: IMAT. Both
    are left-right symmetric, so a mirrored storage order leaves them as they are."""
    hu, mask = body_phantom(rows, cols)
    streaks = (mask == 1) & np.isin(np.arange(cols)[None, :] % 4, (0, 3))
    hu[streaks] = -100.0
    assert np.array_equal(hu, hu[:, ::-1]) and np.array_equal(mask, mask[:, ::-1])
    return hu, mask


@pytest.fixture
def phantom_predictions(monkeypatch):
    """The model 'predicts' the phantom's own classes, so the tissue areas are known exactly."""
    import dataclasses

    from l3seg_lib.inference.predictor import Predictor

    hu0, mask = _muscle_with_fat()
    predict_many = Predictor.predict_many

    def known(self, hus, spacings, *args, **kwargs):
        preds = predict_many(self, hus, spacings, *args, **kwargs)
        assert all(np.allclose(h, np.clip(hu0, -200, 800), atol=4.0) or np.array_equal(h, hu0) for h in hus)  # PNG: 8-bit, window
        return [dataclasses.replace(p, labels=mask.copy()) for p in preds]

    monkeypatch.setattr(Predictor, "predict_many", known)
    return mask


def test_partial_hu_ranges_keep_imat_in_csv_tag_and_seg(tmp_path, tiny_model, phantom_predictions):
    """composition.hu_ranges {muscle: [-30, 150]}: IMAT stays in measurements.csv, the .tag and the SEG."""
    import pydicom

    from l3seg_lib.imageio.labels import read_tag

    hu, mask = _muscle_with_fat()
    write_dicom(tmp_path / "in" / "a.dcm", hu, patient_id="A", orientation=(-1, 0, 0, 0, 1, 0))
    comp = params_from_dict({"composition": {"hu_ranges": {"muscle": [-30, 150]}}}).composition
    res = measure_folder(tmp_path / "in", tiny_model, tmp_path / "out", MeasureOptions(comp, progress=False, **SMALL, dicom=True))
    row = res.measurements.iloc[0]
    assert row["hu_range_imat"] == "-190..-30" and row["hu_range_muscle"] == "-30..150"
    px_cm2 = 0.8 * 0.7 / 100
    imat = (mask == 1) & (hu <= -30)
    assert imat.sum() > 0 and row["imat_cm2"] == pytest.approx(imat.sum() * px_cm2, abs=1e-6)
    tags = read_tag(tmp_path / "out" / row["mask_tag"], (64, 64))
    assert (tags == T.IMAT.tag).sum() * px_cm2 == pytest.approx(row["imat_cm2"], abs=1e-6)
    seg = pydicom.dcmread(tmp_path / "out" / row["dicom_seg"])
    labels = [s.SegmentLabel for s in seg.SegmentSequence]  # 1-4 compartments and IMAT, 5-7 refined (dicom_out.SEGMENTS)
    assert len(labels) == 7 and labels[3] == "IMAT: muscle compartment at -190..-30 HU"
    assert labels[4] == "skeletal muscle -30..150 HU (refined)"  # the partial range given, the others by default
    imat_code = seg.SegmentSequence[3].SegmentedPropertyTypeCodeSequence[0]
    assert (imat_code.CodeValue, imat_code.CodingSchemeDesignator) == (T.IMAT.seg_code.value, T.PRIVATE_SCHEME)
    frames = seg.pixel_array.reshape(7, 64, 64)
    assert frames[4].sum() * px_cm2 == pytest.approx(row["sma_refined_cm2"], abs=1e-6)
    assert frames[3].sum() * px_cm2 == pytest.approx(row["imat_cm2"], abs=1e-6)
    # the same pixels: the SEG's IMAT frame and the tag's IMAT (both in the stored pixel order)
    assert np.array_equal(frames[3].astype(bool), tags == T.IMAT.tag)


def test_remeasure_reads_png_inputs_like_measure(tmp_path, tiny_model, phantom_predictions):
    """A PNG listed in a manifest (spacing, export window): remeasure re-reads it the same way as
    measure, gives the same numbers for an unedited mask and new ones for an edited mask."""
    from l3seg_lib.cli import main

    hu, _ = _muscle_with_fat()
    lo, hi = -200.0, 800.0
    folder = tmp_path / "in"
    (folder / "png").mkdir(parents=True)
    Image.fromarray(np.round((np.clip(hu, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)).save(folder / "png" / "a.png")
    pd.DataFrame([{"image": "png/a.png", "patient_id": "A", "spacing_row_mm": 0.8, "spacing_col_mm": 0.7,
                   "window_lo_hu": lo, "window_hi_hu": hi}]).to_csv(folder / "manifest.csv", index=False)
    out = tmp_path / "out"
    res = measure_folder(folder, tiny_model, out, MeasureOptions(progress=False, **SMALL))
    assert len(res.errors) == 0 and len(res.measurements) == 1
    before = res.measurements.iloc[0]
    assert not before["hu_calibrated"] and (out / before["mask_nifti"]).is_file() and before["imat_cm2"] > 0

    assert main(["remeasure", str(out)]) == 0  # mask as measure wrote it: same numbers
    after = pd.read_csv(out / "remeasured.csv")
    assert "remeasure_error" not in after.columns or after["remeasure_error"].isna().all()
    for key in ("sma_cm2", "sma_refined_cm2", "sat_refined_cm2", "vat_refined_cm2", "imat_cm2",
                "muscle_refined_hu_mean"):
        assert after[key].iloc[0] == pytest.approx(before[key], abs=1e-6, nan_ok=True), key
    assert len(pd.read_csv(out / "audit.csv")) == 0

    time.sleep(0.01)
    paint_muscle_square(out / before["mask_nifti"])
    assert main(["remeasure", str(out)]) == 0
    after = pd.read_csv(out / "remeasured.csv")
    assert after["sma_cm2"].iloc[0] == pytest.approx(40 * 40 * 0.8 * 0.7 / 100)
    assert len(pd.read_csv(out / "audit.csv")) == 1


def test_remeasure_says_why_a_png_without_manifest_cannot_be_read(tmp_path):
    from l3seg_lib.measurement.inputs import entry_for_source, read_entry

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "lone.png")
    entry = entry_for_source(tmp_path / "lone.png")
    assert entry.png_spacing_mm is None
    with pytest.raises(Exception, match="PNG has no pixel spacing"):
        read_entry(entry)


# --------------------------------------------------------------------------------------------
# the vocabulary is written in tissues.py only

OWNER = "tissues.py"
ALLOWED = {
    # reporting/html.py ("Skeletal muscle" row labels) is being restructured separately (issue 22);
    # take it off this list once it reads its names from l3seg_lib.tissues.
    "reporting/html.py",
}


def _vocabulary_literals(path: Path) -> list[str]:
    names = {s.lower() for t in T.ALL_TISSUES for s in (t.name, t.seg_label, t.seg_code.meaning)}
    hexes = {t.hex for t in T.ALL_TISSUES}
    rgbs = {t.rgb for t in T.ALL_TISSUES}
    keys = set(T.CLASS_NAMES)
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            if n.value.lower() in names or n.value.lower() in hexes:
                found.append(f"{n.lineno}: {n.value!r}")
        elif isinstance(n, (ast.Tuple, ast.List, ast.Set)):
            vals = tuple(e.value for e in n.elts if isinstance(e, ast.Constant))
            if len(vals) == 3 == len(n.elts) and vals in rgbs:
                found.append(f"{n.lineno}: colour {vals}")
            if len(keys & {v for v in vals if isinstance(v, str)}) >= 3:
                found.append(f"{n.lineno}: class list {vals}")
    return found


def test_no_module_but_tissues_writes_the_class_vocabulary():
    """Display names, colours and the class-name list are written only in l3seg_lib/tissues.py
    (label maps, dicts keyed by tissue, are data and may name the keys)."""
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == OWNER or rel in ALLOWED:
            continue
        found = _vocabulary_literals(path)
        if found:
            offenders[rel] = found
    assert not offenders, offenders
    assert _vocabulary_literals(PACKAGE / OWNER)  # the scan does see the table where it is
