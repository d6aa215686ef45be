"""Manifest-driven case loading (image + mask pairing) and clinical variables."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from helpers import body_phantom, write_dicom
from PIL import Image

from l3seg_lib.config import DataConfig
from l3seg_lib.data.cases import iter_manifest
from l3seg_lib.data.clinical import clinical_for, read_clinical
from l3seg_lib.data.manifest import read_manifest
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import Acquisition, ImageMeta
from l3seg_lib.imageio.dicom import read_dicom
from l3seg_lib.imageio.nifti import write_nifti_labels

DATA = DataConfig(source="manifest", manifest="manifest.csv")  # masks hold the classes 0-3


def _write_manifest(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_dicom_with_nifti_mask(tmp_path):
    hu, mask = body_phantom(40, 48)
    dcm = write_dicom(tmp_path / "img" / "a.dcm", hu, spacing=(0.8, 0.7))
    img = read_dicom(dcm)
    write_nifti_labels(mask, img.affine, tmp_path / "a_mask.nii.gz")
    man = _write_manifest(tmp_path / "m.csv", [{"image": "img/a.dcm", "mask": "a_mask.nii.gz", "patient_id": "X1"}])
    (case,) = list(iter_manifest(read_manifest(man), DATA))
    assert case.image.patient_id == "X1"
    assert np.array_equal(case.mask, mask)


def test_mask_shape_mismatch_names_both_files(tmp_path):
    hu, mask = body_phantom(40, 48)
    dcm = write_dicom(tmp_path / "a.dcm", hu)
    write_nifti_labels(mask[:, :40], read_dicom(dcm).affine, tmp_path / "small.nii.gz")
    man = _write_manifest(tmp_path / "m.csv", [{"image": "a.dcm", "mask": "small.nii.gz"}])
    with pytest.raises(L3SegInputError) as err:
        list(iter_manifest(read_manifest(man), DATA))
    msg = str(err.value)
    assert "small.nii.gz" in msg and "a.dcm" in msg and "(40, 40)" in msg and "(40, 48)" in msg


def test_mask_voxel_size_mismatch(tmp_path):
    hu, mask = body_phantom(40, 48)
    write_dicom(tmp_path / "a.dcm", hu, spacing=(0.8, 0.7))
    nib.save(nib.Nifti1Image(mask.T[:, :, None].copy(), np.diag([-1.0, -1.0, 3.0, 1.0])), str(tmp_path / "m1.nii.gz"))
    man = _write_manifest(tmp_path / "m.csv", [{"image": "a.dcm", "mask": "m1.nii.gz"}])
    with pytest.raises(L3SegInputError, match="m1.nii.gz: mask voxel size .* differs from the image pixel spacing"):
        list(iter_manifest(read_manifest(man), DATA))


def test_missing_mask_and_label_outside_map(tmp_path):
    hu, mask = body_phantom(40, 48)
    dcm = write_dicom(tmp_path / "a.dcm", hu)
    man = _write_manifest(tmp_path / "m.csv", [{"image": "a.dcm", "mask": ""}])
    with pytest.raises(L3SegInputError, match="no mask given"):
        list(iter_manifest(read_manifest(man), DATA))
    bad = mask.copy()
    bad[0, 0] = 9
    write_nifti_labels(bad, read_dicom(dcm).affine, tmp_path / "bad.nii.gz")
    man = _write_manifest(tmp_path / "m2.csv", [{"image": "a.dcm", "mask": "bad.nii.gz"}])
    with pytest.raises(L3SegInputError, match=r"bad.nii.gz: label value\(s\) \[9\]"):
        list(iter_manifest(read_manifest(man), DATA))


def test_series_with_mask_volume_uses_labelled_slices(tmp_path):
    hu, mask = body_phantom(32, 32)
    for k, z in enumerate((0.0, 3.0, 6.0)):
        write_dicom(tmp_path / "s" / f"{k}.dcm", hu, spacing=(0.8, 0.8), position=(0, 0, z), series_uid="1.2.3")
    from l3seg_lib.imageio.dicom import read_dicom_series
    vol = read_dicom_series(tmp_path / "s")
    labels = np.stack([np.zeros_like(mask), mask, mask])
    write_nifti_labels(labels, vol.affine, tmp_path / "s_mask.nii.gz")
    man = _write_manifest(tmp_path / "m.csv", [{"image": "s", "mask": "s_mask.nii.gz"}])
    cases = list(iter_manifest(read_manifest(man), DATA))
    assert [c.image.slice_location_mm for c in cases] == [3.0, 6.0]
    man = _write_manifest(tmp_path / "m2.csv", [{"image": "s", "mask": "s_mask.nii.gz", "slice_index": 2}])
    (case,) = list(iter_manifest(read_manifest(man), DATA))
    assert case.image.slice_location_mm == 6.0


def test_png_pairs_with_sidecar_columns(tmp_path):
    gray = np.full((20, 30), 10, dtype=np.uint8)
    lab = np.zeros((20, 30), dtype=np.uint8)
    lab[5:10, 5:10] = 2
    Image.fromarray(gray).save(tmp_path / "i.png")
    Image.fromarray(lab).save(tmp_path / "l.png")
    man = _write_manifest(tmp_path / "m.csv", [{
        "image": "i.png", "mask": "l.png", "patient_id": "P9", "spacing_row_mm": 0.75,
        "spacing_col_mm": 0.75, "window_lo_hu": -200, "window_hi_hu": 800}])
    (case,) = list(iter_manifest(read_manifest(man), DATA))
    assert case.image.spacing_mm == (0.75, 0.75)
    assert int((case.mask == 2).sum()) == 25
    man = _write_manifest(tmp_path / "m2.csv", [{"image": "i.png", "mask": "l.png"}])
    with pytest.raises(L3SegInputError, match="i.png: PNG has no pixel spacing"):
        list(iter_manifest(read_manifest(man), DATA))


def test_manifest_errors(tmp_path):
    with pytest.raises(L3SegInputError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "m.csv").write_text("path,label\na,b\n")
    with pytest.raises(L3SegInputError, match="needs an 'image' column"):
        read_manifest(tmp_path / "m.csv")


def test_clinical_csv(tmp_path):
    path = tmp_path / "clin.csv"
    path.write_text("patient_id,sex,height_cm,weight_kg\nA,male,180,81\nB,F,160,\n")
    df = read_clinical(path)
    assert df.loc["A", "sex"] == "M" and df.loc["A", "height_m"] == pytest.approx(1.8)
    assert df.loc["A", "bmi"] == pytest.approx(25.0)
    assert df.loc["B", "bmi"] is None
    b = clinical_for("B", df, ImageMeta(acquisition=Acquisition(patient_weight="64")))
    assert b["weight_kg"] == 64.0 and b["bmi"] == pytest.approx(25.0)  # DICOM weight fills the gap
    assert b["weight_source"] == "PatientWeight 64 kg" and b["height_source"] == "clin.csv height_cm 160 cm"
    c = clinical_for("C", df)
    assert {k: c[k] for k in ("sex", "age", "height_m", "weight_kg", "bmi")} == \
        {"sex": None, "age": None, "height_m": None, "weight_kg": None, "bmi": None}
    # the same plausibility rules as for DICOM: a height in cm in the metres column is converted, and says so
    path.write_text("patient_id,height_m,weight_kg,age\nA,175,70,000\nB,17.5,70000,130\n")
    df = read_clinical(path)
    a = clinical_for("A", df)
    assert a["height_m"] == pytest.approx(1.75) and a["height_source"] == "clin.csv height_m 175 read as cm"
    b = clinical_for("B", df)
    assert b["height_m"] is None and "height_m 17.5 not used" in b["height_source"] and b["bmi"] is None
    assert b["weight_kg"] == pytest.approx(70.0) and b["weight_source"] == "clin.csv weight_kg 70000 read as g"
    assert b["age"] is None and "130 not used" in b["age_source"]
    path.write_text("patient_id,sex\nA,unknown\n")
    with pytest.raises(L3SegInputError, match="sex 'unknown' is not M/F"):
        read_clinical(path)
