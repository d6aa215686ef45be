"""Real-world intake: padding and wrong intercepts, patient variables with wrong units or
placeholders, series folders with localizers / dose reports / other series, enhanced
multi-frame CT, masks saved in another space, and a batch holding all of them."""

from __future__ import annotations

import imagecodecs
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from helpers import body_phantom, messy_series_folder, reconstruction_circle, write_dicom, write_dicom_series
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLossless, JPEGLSLossless

from l3seg_lib.config import DataConfig
from l3seg_lib.data.cases import iter_manifest
from l3seg_lib.data.clinical import clinical_for
from l3seg_lib.data.manifest import read_manifest
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import ImageMeta, acquisition_from_keywords
from l3seg_lib.imageio.dicom import read_dicom
from l3seg_lib.imageio.nifti import write_nifti_labels
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.measurement.orchestration import measure_folder
from l3seg_lib.measurement.composition import assess

SMALL = {"min_matrix": 8, "min_fov_mm": 10.0}
"""MeasureOptions lowered to the floor for the small test phantoms (64 px of 0.7-0.8 mm), below the
64 px / 150 mm a real CT slice at L3 needs (what ``measure`` applies by default)."""


@pytest.fixture
def hu():
    return body_phantom(64, 64)[0]


# --------------------------------------------------------------------------------------------
# patient variables


def _meta(**keywords: str) -> ImageMeta:
    """Image metadata with the DICOM acquisition fields ``keywords``."""
    return ImageMeta(acquisition=acquisition_from_keywords(keywords))


@pytest.mark.parametrize("size, weight, height_m, note", [
    ("1.75", "70", 1.75, "PatientSize 1.75 m"),
    ("175", "70", 1.75, "PatientSize 175 read as cm"),
    ("17500", "70", None, "PatientSize 17500 not used"),
    ("1.75", "70000", 1.75, "PatientSize 1.75 m"),
])
def test_patient_size_units(size, weight, height_m, note):
    clin = clinical_for("P", None, _meta(PatientSex="M", PatientSize=size, PatientWeight=weight, PatientAge="000Y"))
    assert clin["height_m"] == (None if height_m is None else pytest.approx(height_m))
    assert clin["height_source"].startswith(note)
    assert clin["age"] is None and "placeholder" in clin["age_source"]
    if weight == "70000":
        assert clin["weight_kg"] == pytest.approx(70.0) and clin["weight_source"] == "PatientWeight 70000 read as g"


def test_no_verdict_from_a_rejected_height():
    measures = {"sma_refined_cm2": 150.0, "muscle_refined_hu_mean": 40.0, "vat_refined_cm2": 80.0}
    wrong = assess(measures, clinical_for("P", None, _meta(PatientSex="M", PatientSize="17500", PatientWeight="70")))
    assert wrong["smi_cm2_m2"] is None and wrong["sarcopenia"] == "not computable"
    assert "PatientSize 17500 not used" in wrong["sarcopenia_reason"]
    cm = assess(measures, clinical_for("P", None, _meta(PatientSex="M", PatientSize="175", PatientWeight="70")))
    assert cm["smi_cm2_m2"] == pytest.approx(150 / 1.75**2, abs=0.01) and cm["sarcopenia"] == "no"
    assert cm["height_source"] == "PatientSize 175 read as cm"


# --------------------------------------------------------------------------------------------
# masks in the image's space


def test_nifti_mask_in_another_space_is_refused_naming_both_files(tmp_path, hu):
    _, mask = body_phantom(64, 64)
    dcm = write_dicom(tmp_path / "img" / "a.dcm", hu, spacing=(0.8, 0.8))
    img = read_dicom(dcm)
    good = write_nifti_labels(mask, img.affine, tmp_path / "good.nii.gz")
    # the same array saved the way a numpy script does: a plain RAS diagonal affine of the right voxel
    # size. Read by that affine the mask lies rotated by 180 degrees and shifted against the image.
    bad = tmp_path / "rotated.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(mask.T[:, :, None]).astype(np.uint8), np.diag([0.8, 0.8, 3.0, 1.0])), bad)
    pd.DataFrame([{"image": "img/a.dcm", "mask": "good.nii.gz"}]).to_csv(tmp_path / "ok.csv", index=False)
    data = DataConfig(source="manifest", manifest="ok.csv")
    (case,) = list(iter_manifest(read_manifest(tmp_path / "ok.csv"), data))
    assert np.array_equal(case.mask, mask)
    shifted = img.affine.copy()
    shifted[0, 3] += 5.0  # 5 mm off: more than half a voxel
    nib.save(nib.Nifti1Image(np.ascontiguousarray(mask.T[:, :, None]).astype(np.uint8), shifted), tmp_path / "off.nii.gz")
    for name in ("rotated.nii.gz", "off.nii.gz"):
        pd.DataFrame([{"image": "img/a.dcm", "mask": name}]).to_csv(tmp_path / "m.csv", index=False)
        with pytest.raises(L3SegInputError) as err:
            list(iter_manifest(read_manifest(tmp_path / "m.csv"), data))
        msg = str(err.value)
        assert msg.startswith(str(tmp_path / name)) and str(dcm) in msg and "same space" in msg
    assert good.is_file()


# --------------------------------------------------------------------------------------------
# a batch holding all of them


def variants_folder(folder, hu, **common):
    """A folder of real-world single-slice exports (cm height, JPEG-LS, 12-bit lossless JPEG, a
    wrong intercept, MR, a truncated file) and a series folder with a scout, a dose report and a
    secondary capture; ``common``: tags every loose file gets (e.g. one shared ``series_uid``)."""
    write_dicom(folder / "valid.dcm", hu, patient_id="VALID", **common)
    write_dicom(folder / "cm_height.dcm", hu, patient_id="CM", PatientSize="175", PatientAge="000Y", **common)
    jls = write_dicom(folder / "jpegls.dcm", hu, patient_id="JLS", **common)
    ds = pydicom.dcmread(jls)
    ds.compress(JPEGLSLossless)
    ds.save_as(jls, enforce_file_format=True)
    ljpeg = write_dicom(folder / "jpeg_lossless.dcm", hu, patient_id="LJPEG", BitsStored=12, HighBit=11, **common)
    ds = pydicom.dcmread(ljpeg)
    ds.PixelData = encapsulate([imagecodecs.jpeg8_encode(ds.pixel_array, lossless=True, predictor=6, bitspersample=12)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLossless
    ds.save_as(ljpeg, enforce_file_format=True)
    stored = (hu + 1024).astype(np.int16)
    stored[~reconstruction_circle(hu.shape)] = -2000
    write_dicom(folder / "intercept0.dcm", hu, stored=stored, PixelPaddingValue=-2000, RescaleIntercept="0",
                patient_id="BAD", **common)
    write_dicom(folder / "mr.dcm", hu, Modality="MR", patient_id="MR", **common)
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    messy_series_folder(folder / "series_with_scout", hu)
    return folder


def test_measure_a_folder_of_real_world_variants(tmp_path, hu, tiny_model):
    folder = variants_folder(tmp_path / "batch", hu)
    res = measure_folder(folder, tiny_model, tmp_path / "out", MeasureOptions(progress=False, **SMALL, max_slices=5))
    t = res.measurements.set_index("patient_id")
    assert {"VALID", "CM", "JLS", "LJPEG", "P001"} <= set(t.index)
    assert t.loc["LJPEG", "sma_cm2"] == pytest.approx(t.loc["VALID", "sma_cm2"])  # decoded losslessly
    assert t.loc["CM", "height_m"] == pytest.approx(1.75)
    assert t.loc["CM", "height_source"] == "PatientSize 175 read as cm" and pd.isna(t.loc["CM", "age_years"])
    errors = dict(zip(res.errors["source"].map(lambda s: s.rsplit("/", 1)[-1]), res.errors["error"]))
    assert set(errors) == {"intercept0.dcm", "mr.dcm", "broken.dcm"}
    assert "RescaleIntercept" in errors["intercept0.dcm"] and "wrong modality" in errors["mr.dcm"]
    assert all(e.startswith(str(folder)) for e in res.errors["error"])  # every error names its file
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert set(skipped["file"]) == {"scout.dcm", "dose.dcm", "capture.dcm"}
    assert (tmp_path / "out" / "errors.csv").is_file() and (tmp_path / "out" / "index.html").is_file()
    assert "Files left out of series folders" in (tmp_path / "out" / "index.html").read_text()
    assert "PatientSize 175 read as cm" in (tmp_path / "out" / "patients" / "CM.html").read_text()


# --------------------------------------------------------------------------------------------
# DICOM files directly in the measured folder: grouped into series; a lone slice says its level
# was not checked


def _write_torso_series(folder, patient_id="TORSO", series_uid="1.2.826.0.1.3680043.10.1.21"):
    """The synthetic torso (L3 in view) as a DICOM series written straight into ``folder``."""
    from l3seg_lib.phantom.torso import TorsoSpec, make_torso

    torso = make_torso(TorsoSpec(matrix=160, pixel_mm=2.5))
    vol = torso.as_volume()
    dz, dr, dc = vol.spacing_mm
    for k in range(vol.n_slices):
        write_dicom(folder / f"IM{k:04d}.dcm", vol.hu[k], spacing=(dr, dc), position=(-180.0, -150.0, dz * k),
                    series_uid=series_uid, patient_id=patient_id, InstanceNumber=k + 1, SliceThickness=str(dz))
    return torso


def test_a_series_folder_given_directly_is_one_series_measured_inside_l3(tmp_path, tiny_model):
    from l3seg_lib.measurement.inputs import SeriesEntry, discover_inputs

    folder = tmp_path / "series"
    torso = _write_torso_series(folder)
    (inp,) = discover_inputs(folder)
    assert isinstance(inp, SeriesEntry) and inp.image == folder and len(inp.files) == torso.as_volume().n_slices
    res = measure_folder(folder, tiny_model, tmp_path / "out", MeasureOptions(progress=False))
    assert len(res.errors) == 0 and len(res.measurements) == 1  # one slice, not one row per file
    row = res.measurements.iloc[0]
    lo, hi = torso.slices_of("L3")
    assert lo <= row["slice_index"] <= hi and row["source"] == str(folder)
    assert row["level_source"] == "localiser" and "level not verified" not in str(row["review_reasons"])
    assert (tmp_path / "out" / row["localizer_picture"]).is_file()


def test_shared_dicom_series_given_directly_cannot_tell_and_measures_nothing(shared_data, tiny_model, tmp_path):
    folder = shared_data / "dicom_series"  # 20 real slices at T11/T12 without SeriesInstanceUID: no L3
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (../shared/data is optional)")
    res = measure_folder(folder, tiny_model, tmp_path / "out", MeasureOptions(progress=False))
    assert len(res.measurements) == 0
    (err,) = res.errors.to_dict("records")
    assert err["review"] and err["source"] == str(folder) and "L3 not located, listed for review" in err["error"]
    assert (tmp_path / "out" / err["picture"]).is_file()


def test_loose_files_of_two_series_are_two_series_and_a_lone_file_one_slice(tmp_path, hu, tiny_model):
    from l3seg_lib.measurement.inputs import SeriesEntry, discover_inputs

    folder = tmp_path / "mixed"
    write_dicom_series(folder, hu, "1.2.3.100", n=3, SeriesNumber=2)
    write_dicom_series(folder, hu, "1.2.3.200", n=2, z0=100.0, SeriesNumber=3)
    write_dicom(folder / "lone.dcm", hu, patient_id="LONE")  # a series of one file: a slice
    for k in range(2):  # anonymised: no SeriesInstanceUID, but one frame of reference and geometry
        write_dicom(folder / f"anon_{k}.dcm", hu, position=(-100, -120, 3.0 * k), patient_id="ANON",
                    drop=("SeriesInstanceUID", "StudyInstanceUID"), FrameOfReferenceUID="1.2.3.300.1")
    for k in range(2):  # nothing says these belong together: each stays a slice
        write_dicom(folder / f"bare_{k}.dcm", hu, patient_id=f"BARE{k}",
                    drop=("SeriesInstanceUID", "FrameOfReferenceUID"))
    inputs = discover_inputs(folder)
    series = {i.image.name: len(i.files) for i in inputs if isinstance(i, SeriesEntry)}
    assert series == {"series_1.2.3.100": 3, "series_1.2.3.200": 2,
                      next(n for n in series if n.startswith("series_geometry-1.2.3.300.1-")): 2}
    assert sorted(i.image.name for i in inputs if not isinstance(i, SeriesEntry)) == ["bare_0.dcm", "bare_1.dcm",
                                                                                     "lone.dcm"]
    res = measure_folder(folder, tiny_model, tmp_path / "out", MeasureOptions(progress=False, **SMALL))
    assert len(res.errors) == 0
    per_source = res.measurements.groupby(res.measurements["source"].map(lambda s: s.rsplit("/", 1)[-1])).size()
    assert per_source["series_1.2.3.100"] == 3 and per_source["series_1.2.3.200"] == 2 and per_source["lone.dcm"] == 1
    assert set(res.measurements["level_source"]) == {"as given (level not checked)"}  # all short: slice by slice
    short = res.measurements[res.measurements["source"].str.endswith("series_1.2.3.100")].iloc[0]
    assert "a short input of 3 slices was measured slice by slice" in short["review_reasons"]


def test_a_lone_slice_says_its_level_was_not_checked_unless_the_manifest_vouches(tmp_path, hu, tiny_model):
    folder = tmp_path / "in"
    write_dicom(folder / "a.dcm", hu, patient_id="A")
    res = measure_folder(folder, tiny_model, tmp_path / "out", MeasureOptions(progress=False, **SMALL))
    row = res.measurements.iloc[0]
    assert row["level_source"] == "as given (level not checked)" and row["review_required"]
    assert "vertebral level not verified (a single slice was given)" in row["review_reasons"]
    csv = pd.read_csv(tmp_path / "out" / "measurements.csv")
    assert csv["level_source"].tolist() == ["as given (level not checked)"]
    page = (tmp_path / "out" / "patients" / "A.html").read_text()
    assert "vertebral level not verified" in page and "level not checked" in page
    pd.DataFrame([{"image": "a.dcm", "slice_index": 0}]).to_csv(folder / "manifest.csv", index=False)
    res = measure_folder(folder, tiny_model, tmp_path / "out2", MeasureOptions(progress=False, **SMALL))
    row = res.measurements.iloc[0]
    assert row["level_source"] == "manifest" and "level not verified" not in str(row["review_reasons"])
