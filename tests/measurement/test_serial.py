"""Serial scans (issue 35): time points, changes with their uncertainty, cited flags, the pages,
and the phantom follow-ups measured with the shipped model recovering the known change."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset

from l3seg_lib.data.manifest import entry_from_row, iso_date
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import ImageMeta
from l3seg_lib.measurement import composition, serial
from l3seg_lib.measurement.orchestration import measure_folder
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.measurement.result import COLUMNS
from l3seg_lib.models import default_model_path
from l3seg_lib.phantom.followup import Visit, generate_followups


def _meta(**attrs) -> ImageMeta:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ImageMeta(datasets=[ds])


def test_the_date_comes_from_study_date_then_acquisition_date_then_the_manifest():
    assert serial.time_point_fields(_meta(StudyDate="20260105"), 0, None)["study_date"] == "2026-01-05"
    f = serial.time_point_fields(_meta(AcquisitionDate="20260301"), 0, "2026-03-01")
    assert (f["study_date"], f["date_source"]) == ("2026-03-01", "AcquisitionDate")
    f = serial.time_point_fields(ImageMeta(), 0, "2026-02-01")
    assert (f["study_date"], f["date_source"]) == ("2026-02-01", "manifest date")
    conflict = serial.time_point_fields(_meta(StudyDate="20260105"), 0, "2026-02-01")
    assert conflict["study_date"] == "" and "differ" in conflict["date_source"]
    bad = serial.time_point_fields(_meta(StudyDate="2026"), 0, None)
    assert bad["study_date"] == "" and "not a date" in bad["date_source"]
    ids = serial.time_point_fields(_meta(StudyDate="20260105", IssuerOfPatientID="HOSP", StudyInstanceUID="1.2"), 0, None)
    assert ids["issuer_of_patient_id"] == "HOSP" and ids["study_uid"] == "1.2"


def test_new_columns_are_appended_at_the_end_of_measurements_csv():
    assert COLUMNS[-5:] == ("study_date", "date_source", "study_uid", "series_uid", "issuer_of_patient_id")


def test_manifest_date_column_is_parsed_and_a_bad_date_names_the_row():
    assert iso_date("20260105") == iso_date("2026-01-05") == "2026-01-05"
    assert iso_date("2026-02-30") is None
    assert entry_from_row({"image": "a.nii.gz", "date": "2026-01-05"}).date == "2026-01-05"
    with pytest.raises(L3SegInputError, match="a.nii.gz.*not a date"):
        entry_from_row({"image": "a.nii.gz", "date": "05/01/2026"}, "manifest.csv")


def _row(pid, source, study, date, sma, i=0, level="localiser", issuer=""):
    return {"patient_id": pid, "source": source, "slice_index": i, "study_uid": study, "study_date": date,
            "date_source": "StudyDate" if date else "no StudyDate, AcquisitionDate or manifest date",
            "series_uid": source, "issuer_of_patient_id": issuer, "level_source": level, "review_required": False,
            "overlay": "", "pixel_spacing_row_mm": 0.8, "sex": "M", "height_m": 1.8, "bmi_kg_m2": 24.0,
            "weight_kg": 80.0, "weight_source": "PatientWeight 80 kg", "sarcopenia": "no", "cutoff_set": "martin2013",
            "sma_refined_cm2": sma, "smi_cm2_m2": sma / 1.8**2, "muscle_refined_hu_mean": 40.0, "imat_cm2": 5.0,
            "sat_refined_cm2": 100.0, "vat_refined_cm2": 80.0}


def test_time_points_group_series_of_a_study_order_by_date_and_never_order_silently():
    table = pd.DataFrame([
        _row("P", "late", "S2", "2026-04-05", 90.0),                       # listed first, dated later
        _row("P", "a_thin", "S1", "2026-01-05", 100.0, 0), _row("P", "a_thin", "S1", "2026-01-05", 104.0, 1),
        _row("P", "b_thick", "S1", "2026-01-05", 50.0, 0, level="not checked"),   # same study, other series
        _row("P", "undated", "S3", "", 70.0),
        _row("P", "split", "S4", "2026-05-01", 80.0, 0), _row("P", "split", "S4", "2026-05-02", 80.0, 1),
        _row("P", "other_issuer", "S9", "2026-01-05", 10.0, issuer="B"),
    ])
    tp = serial.time_points(table)
    mine = tp[tp["issuer_of_patient_id"] == ""]
    points = mine[mine["status"] == "time point"].sort_values("index")
    assert list(points["date"]) == ["2026-01-05", "2026-04-05"]
    first = points.iloc[0]
    assert first["series"] == "a_thin" and first["sma_refined_cm2"] == pytest.approx(102.0)  # median of 2 slices
    assert "b_thick" in first["note"] and "not used" in first["note"]
    excluded = mine[mine["status"] == "excluded"].set_index("series")
    assert "no date" in excluded.loc["undated", "note"] and "conflicting dates" in excluded.loc["split", "note"]
    assert len(tp[tp["issuer_of_patient_id"] == "B"]) == 1  # another issuer's patient P is another patient
    ch = serial.changes(tp)
    sma = ch[ch["measure"] == "sma_refined_cm2"].iloc[0]
    assert sma["change_vs_baseline"] == pytest.approx(-12.0)
    assert sma["change_pct_vs_baseline"] == pytest.approx(-12.0 / 102.0 * 100)
    assert sma["change_pct_per_100d_vs_baseline"] == pytest.approx(sma["change_pct_vs_baseline"] / 90 * 100)
    assert sma["uncertainty_vs_baseline"] == pytest.approx(1.96 * math.sqrt(2) * serial.method_error(tp)[
        "sma_refined_cm2"].sem * 102.0, rel=1e-3)
    assert sma["muscle_loss"] == "yes" and "Blauwhoff-Buskermolen 2016" in sma["muscle_loss_reason"]
    assert "blauwhoff2016" in sma["references"] and "fearon2011" in sma["references"]


def test_same_day_studies_are_one_time_point_with_a_note():
    table = pd.DataFrame([_row("P", "x", "S1", "2026-01-05", 100.0), _row("P", "y", "S2", "2026-01-05", 98.0)])
    tp = serial.time_points(table)
    assert len(tp) == 1 and "2 studies on 2026-01-05" in tp.iloc[0]["note"]
    assert not serial.has_series(tp) or len(serial.changes(tp)) == 0


def test_cachexia_needs_a_weight_per_time_point_and_follows_fearon():
    base = pd.Series({"weight_kg": 80.0, "weight_source": "PatientWeight 80 kg", "smi_cm2_m2": 60.0, "sex": "M",
                      "bmi_kg_m2": 25.0})
    assert serial.cachexia_flag(base, base.copy().replace({80.0: 75.0}), 90)[0] == "yes"     # > 5 %
    three = base.copy(); three["weight_kg"] = 77.6                                            # 3 %, no sarcopenia
    assert serial.cachexia_flag(base, three, 90)[0] == "no"
    three["smi_cm2_m2"] = 50.0                                                                # sarcopenic (< 55 men)
    assert serial.cachexia_flag(base, three, 90)[0] == "yes"
    csv = base.copy(); csv["weight_source"] = "clinical.csv weight_kg 80 kg"
    assert serial.cachexia_flag(csv, csv, 90)[0] == "not computable"


@pytest.mark.parametrize("sex,bmi", [("M", 22.0), ("M", 28.0), ("F", 22.0)])
def test_cutoff_lines_are_where_the_verdicts_flip(sex, bmi):
    for name in ("martin2013", "fearon2011"):
        (cut, _), = serial.cutoff_lines(name, sex, bmi)["smi_cm2_m2"]
        cs = composition.get_cutoff_set(name)
        assert cs.sarcopenia(cut - 0.01, sex, bmi).value is True and cs.sarcopenia(cut, sex, bmi).value is False
    (cut, _), = serial.cutoff_lines("martin2013", sex, bmi)["muscle_refined_hu_mean"]
    assert composition.myosteatosis_martin2013(cut - 0.01, bmi).value and not composition.myosteatosis_martin2013(cut, bmi).value


# --------------------------------------------------------------------------------------------
# the phantom follow-ups, measured with the shipped model


VISITS = [Visit(0), Visit(91, muscle_pct=-12.0, sat_pct=10.0, vat_pct=15.0, weight_pct=-6.0)]


@pytest.fixture(scope="module")
def followups(tmp_path_factory):
    root = tmp_path_factory.mktemp("followups")
    truth = generate_followups(root / "data", VISITS, n_patients=2, seed=3, matrix=256, n_slices=3)
    res = measure_folder(root / "data" / "dicom", default_model_path(), root / "out", MeasureOptions(progress=False))
    return root, truth, res


def test_phantom_follow_up_has_the_requested_true_change(followups):
    _, truth, _ = followups
    wide = truth.pivot(index="patient_id", columns="visit", values="muscle_cm2")
    assert np.allclose((wide[1] / wide[0] - 1) * 100, -12.0, atol=0.5)
    assert (truth.groupby("patient_id")["study_folder"].nunique() == 2).all()


def test_measured_change_recovers_the_truth_within_the_stated_uncertainty(followups):
    root, truth, res = followups
    ch = pd.read_csv(root / "out" / "changes.csv")
    assert set(ch["patient_id"]) == set(truth["patient_id"])
    for measure, true_col in (("sma_refined_cm2", "muscle_cm2"), ("sat_refined_cm2", "sat_cm2"),
                              ("vat_refined_cm2", "vat_cm2")):
        for pid, t in truth.groupby("patient_id"):
            true_pct = (t.iloc[1][true_col] / t.iloc[0][true_col] - 1) * 100
            row = ch[(ch["patient_id"] == pid) & (ch["measure"] == measure)].iloc[0]
            assert abs(row["change_pct_vs_baseline"] - true_pct) <= row["uncertainty_pct"], (pid, measure, row)
    sma = ch[ch["measure"] == "sma_refined_cm2"]
    assert (sma["beyond_error_vs_baseline"] == "yes").all() and (sma["muscle_loss"] == "yes").all()
    assert (sma["cachexia"] == "yes").all() and (sma["days_since_baseline"] == 91).all()  # weight -6 % (DICOM)


def test_measure_writes_the_timeline_pages_and_links_them(followups):
    root, truth, _ = followups
    out = root / "out"
    tp = pd.read_csv(out / "timepoints.csv")
    assert (tp["status"] == "time point").all() and len(tp) == 4
    for pid in truth["patient_id"].unique():
        page = (out / "patients" / f"{pid}_timeline.html").read_text()
        assert page.count('alt="overlay ') == 2 and "Blauwhoff-Buskermolen" in page and "MDC95" in page
        assert f'href="{pid}_timeline.html"' in (out / "patients" / f"{pid}.html").read_text()
    assert 'href="changes.html"' in (out / "index.html").read_text()
    assert "patients/" in (out / "changes.html").read_text()


def test_a_manifest_with_dates_orders_scans_without_dicom_dates(tmp_path):
    truth = generate_followups(tmp_path / "data", VISITS, n_patients=1, seed=5, matrix=256, n_slices=1,
                               dicom_dates=False, first_patient=4)
    res = measure_folder(tmp_path / "data" / "manifest.csv", default_model_path(), tmp_path / "out",
                         MeasureOptions(progress=False))
    assert set(res.measurements["date_source"]) == {"manifest date"}
    ch = pd.read_csv(tmp_path / "out" / "changes.csv")
    sma = ch[ch["measure"] == "sma_refined_cm2"].iloc[0]
    assert sma["date"] == truth.iloc[1]["date"] and sma["baseline_date"] == truth.iloc[0]["date"]
    assert sma["change_pct_vs_baseline"] < -5


def test_a_batch_of_single_scans_writes_no_serial_outputs(followups, tmp_path):
    root, truth, _ = followups
    first = truth[truth["visit"] == 0]
    import shutil
    for folder in first["study_folder"]:
        shutil.copytree(root / "data" / folder, tmp_path / "in" / folder.split("/")[-1])
    measure_folder(tmp_path / "in", default_model_path(), tmp_path / "out", MeasureOptions(progress=False))
    assert not (tmp_path / "out" / "changes.csv").exists() and not (tmp_path / "out" / "changes.html").exists()
    assert "changes.html" not in (tmp_path / "out" / "index.html").read_text()


def test_single_slice_scans_take_the_real_ct_level_spread_and_the_mdc_is_2_77_sem():
    tp = serial.time_points(pd.DataFrame([_row("P", "a", "S1", "2026-01-05", 100.0),
                                          _row("P", "b", "S2", "2026-04-05", 90.0)]))
    e = serial.method_error(tp)["sma_refined_cm2"]
    assert e.slice_scans == 0 and e.slice_sd == serial.REAL_SLICE_STEP["sma_refined_cm2"]
    assert e.sem == pytest.approx(math.sqrt(e.slice_sd**2 + e.retest**2 + e.members**2))
    assert e.mdc(100.0) == pytest.approx(2.7718 * e.sem * 100.0, rel=1e-3)
    assert "real-CT" in e.describe()


def test_undated_studies_give_pages_and_an_empty_changes_table_not_an_order(tmp_path):
    table = pd.DataFrame([_row("P", "a", "S1", "", 100.0), _row("P", "b", "S2", "2026-04-05", 90.0)])
    written = {}

    def write_csv(df, path):
        written[path.name] = df
        path.write_text(df.to_csv(index=False))
        return path

    links = serial.write_serial(tmp_path, table, {"cutoff_set": "martin2013", "cutoff_description": "",
                                                  "citations": "", "model": "m"}, {}, write_csv)
    assert links == {"P": "P_timeline.html"} and written["changes.csv"].empty
    assert "excluded" in set(written["timepoints.csv"]["status"])
    page = (tmp_path / "patients" / "P_timeline.html").read_text()
    assert "no date" in page and (tmp_path / "changes.html").is_file()
