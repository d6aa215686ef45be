"""No series merged, no file dropped (issue 32, item 9): files that share a SeriesInstanceUID but
not the patient or study are never one series; every file given to ``measure`` is accounted for
in exactly one of ``measurements.csv``, ``errors.csv`` and ``skipped.csv``, over every hostile and
intake folder the tests build."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from helpers import body_phantom, messy_series_folder, write_dicom, write_dicom_series
from test_faults import _bad as faults_bad
from test_faults import _series as faults_series
from test_intake import SMALL, variants_folder
from test_skipped_files import _folder as skipped_folder
from test_skipped_files import _no_permission

from l3seg_lib.measurement.accounting import account_files, unaccounted
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.measurement.orchestration import measure_folder

SHARED = "1.2.826.0.1.3680043.9.32.1"


@pytest.fixture(scope="module")
def hu():
    return body_phantom(64, 64)[0]


def _truncate(path, keep: int):
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    return path


def shared_uid_patients(folder, hu, n=20):
    """``n`` patients' single-slice exports under one SeriesInstanceUID (a careless anonymiser), at
    the same position, and three truncated files under that UID (pixel data cut, header cut, cut
    inside the preamble)."""
    for k in range(n):
        write_dicom(folder / f"pat{k:02d}.dcm", hu, patient_id=f"PAT{k:02d}", series_uid=SHARED)
    _truncate(write_dicom(folder / "cut_pixels.dcm", hu, patient_id="CUTPX", series_uid=SHARED), -3000)
    _truncate(write_dicom(folder / "cut_header.dcm", hu, patient_id="CUTHD", series_uid=SHARED), 300)
    _truncate(write_dicom(folder / "cut_preamble.dcm", hu, patient_id="CUTPR", series_uid=SHARED), 100)
    return folder


def two_patients_two_slices(folder, hu):
    """Two patients, two slices each, all under one SeriesInstanceUID (and one series folder
    holding a note, a truncated file and two patients under one UID)."""
    for j, pid in enumerate(("ANNA", "BERT")):
        for k in range(2):
            write_dicom(folder / f"{pid}_{k}.dcm", hu, patient_id=pid, series_uid=SHARED, position=(-100, -120, 3.0 * k),
                        InstanceNumber=k + 1, StudyInstanceUID=f"{SHARED}.{j + 1}")
    sub = folder / "sub"
    for j, pid in enumerate(("CARL", "DORA")):
        for k in range(2):
            write_dicom(sub / f"{pid}_{k}.dcm", hu, patient_id=pid, series_uid=SHARED + ".9",
                        position=(-100, -120, 3.0 * k), InstanceNumber=k + 1, StudyInstanceUID=f"{SHARED}.{j + 3}")
    (sub / "README.txt").write_text("exported by hand")
    _truncate(write_dicom(sub / "cut.dcm", hu, patient_id="CARL", series_uid=SHARED + ".9"), 100)
    return folder


def loose_mixed(folder, hu):
    """Loose files of two series, an anonymised pair, two bare files and a lone slice (test_intake)."""
    write_dicom_series(folder, hu, "1.2.3.100", n=3, SeriesNumber=2)
    write_dicom_series(folder, hu, "1.2.3.200", n=2, z0=100.0, SeriesNumber=3)
    write_dicom(folder / "lone.dcm", hu, patient_id="LONE")
    for k in range(2):
        write_dicom(folder / f"anon_{k}.dcm", hu, position=(-100, -120, 3.0 * k), patient_id="ANON",
                    drop=("SeriesInstanceUID", "StudyInstanceUID"), FrameOfReferenceUID="1.2.3.300.1")
    for k in range(2):
        write_dicom(folder / f"bare_{k}.dcm", hu, patient_id=f"BARE{k}", drop=("SeriesInstanceUID", "FrameOfReferenceUID"))
    messy_series_folder(folder / "messy", hu)
    return folder


def hostile(folder, hu):
    """Hostile patient IDs and a file without PixelSpacing (test_faults)."""
    faults_series(folder, "P" * 5000, ".", '=HYPERLINK("http://evil.example","click")', "ESC\x1b[31mRED")
    faults_bad(folder)
    return folder


CASES = {
    "shared-uid patients": shared_uid_patients,
    "two patients, two slices, one uid": two_patients_two_slices,
    "real-world variants": lambda f, hu: variants_folder(f, hu),
    "real-world variants sharing one uid": lambda f, hu: variants_folder(f, hu, series_uid=SHARED),
    "loose mixed": loose_mixed,
    "hostile ids": hostile,
    "skipped files": lambda f, hu: skipped_folder(f.parent) if f.name == "in" else None,
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_file_is_accounted_for_in_exactly_one_table(case, tmp_path, hu, tiny_model, monkeypatch):
    folder = tmp_path / "in"
    CASES[case](folder, hu)
    if case == "skipped files":
        _no_permission(monkeypatch, "locked.dcm")
    measure_folder(folder, tiny_model, tmp_path / "out", MeasureOptions(progress=False, read_threads=0, **SMALL))
    table = account_files(folder, tmp_path / "out")
    on_disk = {str(p.relative_to(folder)) for p in folder.iterdir() if p.is_file() or p.is_symlink()}
    listed = set(table["file"]) | {f.rstrip("/") for f in table["file"]}
    assert on_disk <= listed, on_disk - listed  # every file of the folder is in the account
    bad = unaccounted(folder, tmp_path / "out")
    assert bad.empty, bad.to_string()


def test_patients_sharing_a_series_uid_are_never_merged(tmp_path, hu, tiny_model):
    folder = shared_uid_patients(tmp_path / "in", hu, n=20)
    res = measure_folder(folder, tiny_model, tmp_path / "out", MeasureOptions(progress=False, read_threads=0, **SMALL))
    assert sorted(res.measurements["patient_id"]) == [f"PAT{k:02d}" for k in range(20)]  # 20 of 20, none dropped
    assert not any("duplicate" in str(r) for r in res.skipped["reason"])
    row = res.measurements.iloc[0]
    assert row["review_required"] and "series split: SeriesInstanceUID shared by" in row["review_reasons"]
    assert "PatientID 'PAT00'" in row["series_notes"]
    errors = {os.path.basename(s) for s in res.errors["source"]}
    assert {"cut_pixels.dcm", "cut_header.dcm", "cut_preamble.dcm"} <= errors


def test_two_patients_under_one_uid_are_two_series(tmp_path, hu, tiny_model):
    folder = two_patients_two_slices(tmp_path / "in", hu)
    res = measure_folder(folder, tiny_model, tmp_path / "out", MeasureOptions(progress=False, read_threads=0, **SMALL))
    by_patient = res.measurements.groupby("patient_id")["source"].agg(set)
    assert len(by_patient["ANNA"]) == 1 and by_patient["ANNA"] != by_patient["BERT"]  # two inputs, two slices each
    assert (res.measurements["patient_id"] == "ANNA").sum() == 2
    # a series folder holding two patients under one uid: one measured, the other's files listed, each with why
    inside = res.skipped[res.skipped["source"] == str(folder / "sub")]
    why = dict(zip(inside["file"], inside["reason"]))
    other = "DORA" if "CARL" in set(res.measurements["patient_id"]) else "CARL"
    assert {f"{other}_0.dcm", f"{other}_1.dcm", "README.txt"} <= set(why)
    assert "same SeriesInstanceUID" in why[f"{other}_0.dcm"] and "not a DICOM file" in why["README.txt"]
    table = pd.read_csv(tmp_path / "out" / "measurements.csv")
    assert table["series_notes"].str.contains("SeriesInstanceUID shared by").all()
