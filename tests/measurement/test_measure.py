"""Batch measurement over a folder: table with units, errors table, references, HTML pages."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import body_phantom, paint_muscle_square, sr_numbers, sr_texts, write_dicom

from l3seg_lib import phantom
from l3seg_lib.config import CompositionConfig
from l3seg_lib.imageio.dicom import read_dicom, read_dicom_series
from l3seg_lib.imageio.labels import read_label_file, remap_labels
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.measurement.orchestration import measure_folder
from l3seg_lib.measurement.inputs import discover_inputs

SMALL = {"min_matrix": 8, "min_fov_mm": 10.0}
"""MeasureOptions lowered to the floor for the small test phantoms (64 px of 0.7-0.8 mm), below the
64 px / 150 mm a real CT slice at L3 needs (what ``measure`` applies by default)."""


@pytest.fixture
def batch_folder(tiny_processed, tmp_path):
    raw = tiny_processed / "raw"
    folder = tmp_path / "in"
    refs = tmp_path / "refs"
    refs.mkdir()
    patients = sorted(p.name for p in (raw / "dicom").iterdir())
    for pid in patients[:2]:  # two series folders with NIfTI references (phantom labels)
        shutil.copytree(raw / "dicom" / pid, folder / pid)
        shutil.copy(raw / "masks" / f"{pid}.nii.gz", refs / f"{pid}.nii.gz")
    # one loose DICOM file with a Slice-O-Matic reference in the stored pixel order
    loose = sorted((raw / "dicom" / patients[2]).glob("*.dcm"))[0]
    shutil.copy(loose, folder / "loose.dcm")
    img = read_dicom(folder / "loose.dcm")
    labels = remap_labels(read_label_file(raw / "masks" / f"{patients[2]}.nii.gz")[0], phantom.PHANTOM_LABEL_MAP, "x")
    tags = np.choose(labels, [0, 1, 7, 5]).astype(np.uint8)  # classes -> Slice-O-Matic tags
    assert img.stored_transform is not None
    header = f"x:{tags.shape[1]} y:{tags.shape[0]} z:1 type:BYTE".encode()
    stored = tags[:, ::-1] if img.stored_transform[0, 1] < 0 else tags
    (refs / "loose.dcm.tag").write_bytes(header + b"\x0c" + stored.tobytes())
    # bad inputs
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    hu, _ = body_phantom(64, 64)
    write_dicom(folder / "mr.dcm", hu, Modality="MR")
    (folder / "notes.txt").write_text("ignored")
    return folder, refs, patients


def test_discover_inputs(batch_folder):
    folder, _, patients = batch_folder
    names = sorted(i.image.name for i in discover_inputs(folder))
    assert names == sorted([*patients[:2], "broken.dcm", "loose.dcm", "mr.dcm"])


def test_measure_folder_end_to_end(batch_folder, tiny_model, tmp_path):
    folder, refs, patients = batch_folder
    clinical = tmp_path / "clinical.csv"
    pd.DataFrame([{"patient_id": patients[0], "sex": "F", "height_m": 1.6, "weight_kg": 70}]).to_csv(clinical, index=False)
    res = measure_folder(folder, tiny_model, tmp_path / "out",
                         MeasureOptions(CompositionConfig(), clinical_csv=clinical, reference_dir=refs, progress=False))
    t = res.measurements
    assert set(t["patient_id"]) == set(patients[:3])
    for col in ("sma_cm2", "sma_refined_cm2", "sat_cm2", "vat_cm2", "imat_cm2", "smi_cm2_m2", "bmi_kg_m2",
                "muscle_refined_hu_mean", "pixel_spacing_row_mm", "sarcopenia", "sarcopenia_reason", "cutoff_set"):
        assert col in t.columns
    first = t[t["patient_id"] == patients[0]].iloc[0]
    assert first["sex"] == "F" and first["height_m"] == 1.6  # from the CSV, overriding DICOM
    assert first["smi_cm2_m2"] == pytest.approx(first["sma_refined_cm2"] / 1.6**2, abs=0.01)
    # the errors table names the two bad files and the batch went on
    errors = dict(zip(res.errors["source"].map(lambda s: s.rsplit("/", 1)[-1]), res.errors["error"]))
    assert "wrong modality 'MR'" in errors["mr.dcm"]
    assert "broken.dcm" in errors and len(res.errors) == 2 + 2  # + 2 series refs need the phantom label map
    out = tmp_path / "out"
    assert (out / "measurements.csv").is_file() and (out / "errors.csv").is_file()
    html = (out / "patients" / f"{patients[0]}.html").read_text()
    assert "Skeletal muscle index" in html and "cm²/m²" in html and "Martin L" in html and "data:image/png;base64" in html
    index = (out / "index.html").read_text()
    assert "could not be measured" in index and "mr.dcm" in index
    # the .tag reference was read (identity map would fail on tag values 5/7)
    assert len(res.validation) == 1 and res.validation.iloc[0]["source"].endswith("loose.dcm")


def test_measure_with_reference_label_map(batch_folder, tiny_model, tmp_path):
    folder, refs, patients = batch_folder
    (refs / "loose.dcm.tag").unlink()
    res = measure_folder(folder, tiny_model, tmp_path / "out",
                         MeasureOptions(reference_dir=refs, reference_labels=phantom.PHANTOM_LABEL_MAP, progress=False))
    assert set(res.validation["patient_id"]) == set(patients[:2])
    assert list(res.agreement["tissue"]) == ["muscle", "sat", "vat"]
    assert {"bias", "loa_low", "loa_high", "n"} <= set(res.agreement.columns)
    assert any("no reference mask" in e for e in res.errors["error"])
    assert "Agreement with the reference masks" in (tmp_path / "out" / "index.html").read_text()


def test_long_volume_without_l3_goes_to_review_unless_the_manifest_names_the_slice(tmp_path, tiny_model):
    hu, _ = body_phantom(64, 64)
    for z in range(7):
        write_dicom(tmp_path / "in" / "series" / f"{z}.dcm", hu, position=(0, 0, 3.0 * z), series_uid="1.2.3")
    res = measure_folder(tmp_path / "in", tiny_model, tmp_path / "out", MeasureOptions(progress=False, **SMALL))
    err = res.errors.iloc[0]
    assert "L3 not located, listed for review" in err["error"] and err["review"]
    assert (tmp_path / "out" / err["picture"]).is_file()
    pd.DataFrame([{"image": "series", "slice_index": 3, "patient_id": "S1"}]).to_csv(tmp_path / "in" / "manifest.csv", index=False)
    res = measure_folder(tmp_path / "in", tiny_model, tmp_path / "out2", MeasureOptions(progress=False, **SMALL))
    assert res.measurements["slice_index"].tolist() == [3] and res.measurements["patient_id"].tolist() == ["S1"]
    assert read_dicom_series(tmp_path / "in" / "series").n_slices == 7


def test_interrupted_batch_resumes_and_force_redoes(tmp_path, tiny_model):
    hu, _ = body_phantom(64, 64)
    for k in range(3):
        write_dicom(tmp_path / "in" / f"p{k}.dcm", hu, patient_id=f"P{k}")
    write_dicom(tmp_path / "in" / "mr.dcm", hu, Modality="MR", patient_id="MR")
    out = tmp_path / "out"
    first = measure_folder(tmp_path / "in", tiny_model, out, MeasureOptions(progress=False, **SMALL, max_inputs=2))
    assert len(first.measurements) + len(first.errors) == 2  # "interrupted" after two inputs
    ledger = pd.read_csv(out / "ledger.csv")
    assert len(ledger) == 2 and set(ledger["status"]) <= {"measured", "refused"}
    kept = (out / "inputs").stat().st_mtime_ns
    second = measure_folder(tmp_path / "in", tiny_model, out, MeasureOptions(progress=False, **SMALL))
    assert set(second.measurements["patient_id"]) == {"P0", "P1", "P2"} and len(second.errors) == 1
    ledger = pd.read_csv(out / "ledger.csv")
    assert len(ledger) == 4 and ledger["source"].is_unique  # only the two unfinished inputs were measured
    assert set(ledger["status"]) == {"measured", "refused"} and ledger["model_sha256"].nunique() == 1
    assert kept <= (out / "inputs").stat().st_mtime_ns
    measure_folder(tmp_path / "in", tiny_model, out, MeasureOptions(progress=False, **SMALL, force=True))
    assert len(pd.read_csv(out / "ledger.csv")) == 8  # --force measured everything again


@pytest.mark.parametrize("kind", ["tag", "nifti"])
def test_edit_and_remeasure(tmp_path, tiny_model, kind):
    """measure writes editable masks; after an edit, remeasure recomputes and audits the change."""
    import time as _time

    from l3seg_lib.cli import main
    from l3seg_lib.imageio.labels import read_tag, write_tag

    hu, _ = body_phantom(64, 64)
    write_dicom(tmp_path / "in" / "a.dcm", hu, patient_id="A", orientation=(-1, 0, 0, 0, 1, 0))  # stored mirrored
    out = tmp_path / "out"
    res = measure_folder(tmp_path / "in", tiny_model, out, MeasureOptions(progress=False, **SMALL))
    row = res.measurements.iloc[0]
    assert (out / row["mask_nifti"]).is_file() and (out / row["mask_tag"]).is_file()
    assert "skeletal muscle" in (out / "masks" / "labels.txt").read_text()
    _time.sleep(0.01)
    if kind == "tag":  # paint the left half of the stored image as muscle (tag 1)
        tags = read_tag(out / row["mask_tag"], (64, 64))
        tags[:, :32] = 1
        write_tag(out / row["mask_tag"], tags)
    else:
        paint_muscle_square(out / row["mask_nifti"])
    assert main(["remeasure", str(out)]) == 0
    audit = pd.read_csv(out / "audit.csv")
    assert len(audit) == 1 and "SMA (cm²)" in audit["changes"].iloc[0] and audit["file"].iloc[0].endswith(kind if kind == "tag" else ".nii.gz")
    after = pd.read_csv(out / "remeasured.csv")
    assert after["sma_cm2"].iloc[0] != pytest.approx(row["sma_cm2"])
    assert "remeasured from edited masks" in (out / "remeasure.html").read_text()


def test_dicom_seg_and_sr_match_the_csv(tmp_path, tiny_model):
    """--dicom: one SEG and one SR per measured slice, referencing the source; for every segment
    SEG area = SR number = CSV column, each SR number referencing its segment; flags, level and
    verdict criteria in the SR; dciodvfy (dicom3tools) finds no error where installed."""
    import pydicom

    from l3seg_lib.measurement.dicom_out import MEASURES, SEGMENTS

    hu, _ = body_phantom(64, 64)
    src = write_dicom(tmp_path / "in" / "a.dcm", hu, patient_id="A", orientation=(-1, 0, 0, 0, 1, 0))
    res = measure_folder(tmp_path / "in", tiny_model, tmp_path / "out", MeasureOptions(progress=False, **SMALL, dicom=True))
    row = res.measurements.iloc[0]
    seg = pydicom.dcmread(tmp_path / "out" / row["dicom_seg"])
    source = pydicom.dcmread(src)
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) == len(SEGMENTS) == 7
    assert seg.SeriesDescription and all("RecommendedDisplayCIELabValue" in s for s in seg.SegmentSequence)
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    frames = seg.pixel_array.reshape(7, 64, 64)  # one frame per segment, in the source's pixel order
    spacing_cm2 = 0.8 * 0.7 / 100
    sr = pydicom.dcmread(tmp_path / "out" / row["dicom_sr"])
    assert sr.Modality == "SR" and sr.ContentTemplateSequence[0].TemplateIdentifier == "1500" and sr.SeriesDescription
    numbers = sr_numbers(sr)
    for number, (_tissue, _refined, column) in SEGMENTS.items():  # SEG area = SR number = CSV column
        code = MEASURES[column][0]
        seg_area = frames[number - 1].sum() * spacing_cm2
        assert seg_area == pytest.approx(row[column], abs=1e-6), column
        assert numbers[code]["value"] == pytest.approx(row[column], rel=1e-9, abs=1e-9), column
        assert numbers[code]["segment"] == number and numbers[code]["unit"] == "cm2"  # references its segment
    units = {"muscle_refined_hu_mean": "[hnsf'U]", "muscle_hu_mean": "[hnsf'U]", "smi_cm2_m2": "cm2/m2"}
    for key, (code, *_rest) in MEASURES.items():
        if pd.notna(row.get(key)):
            assert numbers[code]["value"] == pytest.approx(float(row[key]), rel=1e-6), key  # the SR says what the CSV says
            assert numbers[code]["unit"] == units.get(key, "cm2")
    texts = sr_texts(sr)
    assert texts["Review required before use"] == ("Yes" if row["review_required"] else "No")
    assert "vertebral level not verified" in texts["Review reasons"]
    assert texts["How the vertebral level is known"].startswith("as given (level not checked)")
    assert texts["L3 localisation confidence"].startswith("not assessed")
    assert numbers["SLICEZ"]["value"] == pytest.approx(row["slice_location_mm"])
    assert "Visceral obesity (JASSO 2002)" in texts and "VAT" in texts["Visceral obesity: verdict and criterion"]
    assert not any("martin2013" in name.lower() for name in texts if name.startswith("Visceral"))
    for f in (row["dicom_seg"], row["dicom_sr"]):
        assert_dciodvfy_clean(tmp_path / "out" / f)


def assert_dciodvfy_clean(path) -> None:
    """dciodvfy (Debian package dicom3tools) reports no error on ``path``; skipped where absent."""
    import shutil
    import subprocess

    if not shutil.which("dciodvfy"):
        return
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace")
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


@pytest.mark.slow
def test_measure_on_two_dask_workers_equals_serial(tmp_path, tiny_model):
    from l3seg_lib.cli import main

    hu, _ = body_phantom(64, 64)
    for k in range(4):
        write_dicom(tmp_path / "in" / f"p{k}.dcm", hu + k, patient_id=f"P{k}")
    write_dicom(tmp_path / "in" / "mr.dcm", hu, Modality="MR", patient_id="MR")
    serial = measure_folder(tmp_path / "in", tiny_model, tmp_path / "serial", MeasureOptions(progress=False, **SMALL))
    assert main(["measure", str(tmp_path / "in"), "--model", str(tiny_model), "--out", str(tmp_path / "dask"),
                 "--workers", "2", "--min-matrix", "8", "--min-fov-mm", "10"]) == 1  # exit status 1: the MR input is refused
    parallel = pd.read_csv(tmp_path / "dask" / "measurements.csv", dtype={"patient_id": str})
    cols = ["patient_id", "sma_cm2", "sat_cm2", "vat_cm2", "muscle_refined_hu_mean", "imat_cm2", "sarcopenia"]
    left = serial.measurements[cols].sort_values("patient_id").reset_index(drop=True)
    right = parallel[cols].sort_values("patient_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)  # the same numbers
    assert len(pd.read_csv(tmp_path / "dask" / "errors.csv")) == 1
    assert len(pd.read_csv(tmp_path / "dask" / "ledger.csv")) == 5


def test_level_not_verified_flag_says_what_was_given():
    from l3seg_lib.measurement.flags import SliceContext, level_not_verified

    hu, labels = body_phantom(64, 64)

    def reason(level):
        return level_not_verified(SliceContext(hu, labels, None, (1.0, 1.0), {}, {}, level))

    assert "a single slice was given" in reason({"level_source": "as given (level not checked)", "input_slices": 1})
    assert "a short input of 4 slices" in reason({"level_source": "as given (level not checked)", "input_slices": 4})
    for source in ("localiser", "manifest"):
        assert reason({"level_source": source, "input_slices": 1}) is None
    assert reason({"l3_confidence": "high"}) is None  # callers that say nothing of the level


