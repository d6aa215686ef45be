"""Series of one patient that disagree are named on both (issue 30, item 5)."""

from __future__ import annotations

from l3seg_lib.measurement.consistency import apply_disagreements, series_disagreements
from l3seg_lib.measurement.result import InputResult, SliceResult


def _measured(source: str, pid: str, z: float, index: int = 50) -> InputResult:
    row = SliceResult(patient_id=pid, source=source, slice_index=index, slice_id="s", slice_location_mm=z,
                      pixel_spacing_row_mm=0.8, pixel_spacing_col_mm=0.8)
    return InputResult(source, rows=[row])


def _review(source: str, pid: str) -> InputResult:
    return InputResult(source, status="review", reason="L3 cannot be told",
                       errors=[{"source": source, "error": "L3 not located", "review": True, "patient_id": pid}])


def test_measured_beside_refused_names_the_other_on_both():
    results = [_measured("/data/P1/crop", "P1", -630.0), _review("/data/P1/whole", "P1"), _measured("/d/P2", "P2", 0.0)]
    notes = series_disagreements(results)
    assert set(notes) == {"/data/P1/crop", "/data/P1/whole"}
    apply_disagreements(results, notes)
    row = results[0].rows[0]
    assert row.review_required and "whole" in row.review_reasons and "/data" not in row.review_reasons
    assert "measured at slice 50" in results[1].errors[0]["error"]
    assert not results[2].rows[0].review_required


def test_levels_compared_only_within_one_frame_of_reference():
    a, b = _measured("A", "P1", -630.0), _measured("B", "P1", -580.0)
    assert series_disagreements([a, b]) == {}  # no frames: two studies may lie anywhere
    assert series_disagreements([a, b], {"A": "1.2.3", "B": "1.2.4"}) == {}
    notes = series_disagreements([a, b], {"A": "1.2.3", "B": "1.2.3"})
    assert "50 mm away" in notes["A"][0] and "50 mm away" in notes["B"][0]
    assert series_disagreements([a, _measured("B", "P1", -640.0)], {"A": "1.2.3", "B": "1.2.3"}) == {}


def test_measure_names_a_patients_other_series_on_its_page(tiny_model, tmp_path):
    """One patient, two series in one folder: a whole scan in which L3 cannot be told (the view
    lies above L3) and three slices given directly. The slices are measured and their page and CSV
    row name the refused series; the refused series' errors.csv line names the measured one."""
    from helpers import write_dicom

    from l3seg_lib.measurement.options import MeasureOptions
    from l3seg_lib.measurement.orchestration import measure_folder
    from l3seg_lib.phantom.torso import TorsoSpec, make_torso

    torso = make_torso(TorsoSpec(matrix=160, pixel_mm=2.5, z_from=125.0, seed=6))
    vol = torso.as_volume()
    dz, dr, dc = vol.spacing_mm
    for k in range(vol.n_slices):
        write_dicom(tmp_path / "in" / "WHOLE" / f"IM{k:04d}.dcm", vol.hu[k], spacing=(dr, dc),
                    position=(-200.0, -200.0, dz * k), series_uid="1.2.826.0.1.3680043.10.9.1", patient_id="PX",
                    InstanceNumber=k + 1, SliceThickness=str(dz))
    for k in range(3):
        write_dicom(tmp_path / "in" / "CROP" / f"IM{k:04d}.dcm", vol.hu[10 + k], spacing=(dr, dc),
                    position=(-200.0, -200.0, dz * (10 + k)), series_uid="1.2.826.0.1.3680043.10.9.2",
                    patient_id="PX", InstanceNumber=k + 1, SliceThickness=str(dz))
    res = measure_folder(tmp_path / "in", tiny_model, tmp_path / "out", MeasureOptions(progress=False))
    rows = res.measurements
    assert len(rows) == 3 and rows["review_required"].all()
    assert rows["review_reasons"].str.contains("another series of this patient \\(WHOLE\\)").all()
    review = res.errors[res.errors["review"]]
    assert len(review) == 1 and "another series of this patient (CROP) was measured" in review.iloc[0]["error"]
    page = (tmp_path / "out" / "patients" / "PX.html").read_text()
    assert "another series of this patient (WHOLE)" in page
