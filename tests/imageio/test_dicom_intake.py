"""DICOM as real exports hold it: padding outside the reconstruction circle and wrong intercepts,
series folders with localizers, dose reports and other series, duplicates, uneven spacing and tilt,
enhanced multi-frame CT, a set of files of several series, dotted file names without SOP instance
UIDs, and the compressed real series in ../shared/data (skipped with a message when it is absent)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from helpers import (
    body_phantom,
    messy_series_folder,
    reconstruction_circle,
    write_dicom,
    write_dicom_series,
)
from pydicom.uid import generate_uid

from l3seg_lib.data.clinical import clinical_for
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.dicom import SERIES_RULE, read_dicom, read_dicom_series
from l3seg_lib.imageio.reader import read_image


@pytest.fixture
def hu():
    return body_phantom(64, 64)[0]


# --------------------------------------------------------------------------------------------
# HU safety


def test_padding_is_ignored_and_becomes_air(tmp_path, hu):
    stored = (hu + 1024).astype(np.int16)
    stored[~reconstruction_circle(hu.shape)] = -2000  # outside the reconstruction circle
    path = write_dicom(tmp_path / "pad.dcm", hu, stored=stored, PixelPaddingValue=-2000)
    img = read_dicom(path)
    inside = reconstruction_circle(hu.shape)
    assert img.hu.min() == -1024 and np.allclose(img.hu[inside], hu[inside])


def test_wrong_intercept_with_padding_is_refused_naming_the_intercept(tmp_path, hu):
    """RescaleIntercept 0 instead of -1024 and PixelPaddingValue -2000: the padding looks like
    'air' to a naive check; with padding left out there is no air and no soft tissue."""
    stored = (hu + 1024).astype(np.int16)
    stored[~reconstruction_circle(hu.shape)] = -2000
    path = write_dicom(tmp_path / "bad.dcm", hu, stored=stored, PixelPaddingValue=-2000, RescaleIntercept="0")
    with pytest.raises(L3SegInputError) as err:
        read_dicom(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "values do not look like HU" in msg
    assert "RescaleIntercept (the file says 0" in msg and "padding left out" in msg


def test_padding_range_limit(tmp_path, hu):
    stored = (hu + 1024).astype(np.int16)
    outside = ~reconstruction_circle(hu.shape)
    stored[outside] = np.where(np.arange(outside.sum()) % 2, -2000, -1500)
    path = write_dicom(tmp_path / "range.dcm", hu, stored=stored, PixelPaddingValue=-2000,
                       PixelPaddingRangeLimit=-1500)
    assert read_dicom(path).hu[outside].max() == -1024


# --------------------------------------------------------------------------------------------
# series hygiene


def test_series_folder_skips_localizer_dose_report_and_secondary_capture(tmp_path, hu):
    vol = read_dicom_series(messy_series_folder(tmp_path / "s", hu))
    assert vol.hu.shape == (3, 64, 64)
    reasons = {s["file"]: s["reason"] for s in vol.meta.skipped}
    assert "localizer" in reasons["scout.dcm"]
    assert "dose report" in reasons["dose.dcm"]
    assert "secondary capture" in reasons["capture.dcm"]


def test_several_eligible_series_choose_by_rule(tmp_path, hu):
    folder = tmp_path / "two"
    write_dicom_series(folder, hu, "1.2.3.200", ConvolutionKernel="B70f", SeriesNumber=3,
                       SeriesDescription="Bone 1mm", SliceThickness="1")
    write_dicom_series(folder, hu, "1.2.3.100", ConvolutionKernel="B30f", SeriesNumber=2,
                       SeriesDescription="Abdomen 3mm")
    vol = read_dicom_series(folder)
    assert vol.meta.series_uid == "1.2.3.100" and vol.meta.acquisition.convolution_kernel == "B30f"
    other = [s for s in vol.meta.skipped if "another eligible series" in s["reason"]]
    assert len(other) == 3 and all("Bone 1mm" in o["reason"] and SERIES_RULE in o["reason"] for o in other)
    assert sorted(o["file"] for o in other) == [".200_0.dcm", ".200_1.dcm", ".200_2.dcm"]  # each file named


def test_duplicates_uneven_spacing_and_tilt_are_reported(tmp_path, hu):
    folder = tmp_path / "odd"
    for k, z in enumerate((0.0, 3.0, 3.0, 9.0)):
        write_dicom(folder / f"{k}.dcm", hu, position=(-100, -120, z), series_uid="1.2.5", InstanceNumber=k + 1)
    vol = read_dicom_series(folder)
    assert vol.n_slices == 3
    notes = " | ".join(vol.meta.series_notes)
    assert "duplicate positions left out" in notes and "uneven slice spacing 3.00-6.00 mm" in notes
    assert any(s["file"] == "2.dcm" and "duplicate" in s["reason"] for s in vol.meta.skipped)
    tilted = tmp_path / "tilt"
    for k in range(3):  # the table moves 3 mm per slice while the gantry is tilted: rows shift 0.5 mm
        write_dicom(tilted / f"{k}.dcm", hu, position=(-100, -120 + 0.5 * k, 3.0 * k), series_uid="1.2.6")
    assert any("gantry tilt 9.5 degrees" in n for n in read_dicom_series(tilted).meta.series_notes)


def test_enhanced_multiframe_ct_reads_like_its_series(tmp_path, hu):
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    files = [write_dicom(tmp_path / "single" / f"{k}.dcm", hu + 10 * k, position=(-100, -120, 3.0 * k),
                         series_uid="1.2.7", InstanceNumber=k + 1, StudyInstanceUID="1.2.7.1",
                         FrameOfReferenceUID="1.2.7.2", SeriesNumber=1, Manufacturer="l3seg tests")
             for k in range(3)]
    legacy = [pydicom.dcmread(f) for f in files]
    for ds in legacy:
        ds.StudyInstanceUID = "1.2.7.1"
    enhanced = LegacyConvertedEnhancedCTImage(legacy, series_instance_uid=generate_uid(), series_number=9,
                                              sop_instance_uid=generate_uid(), instance_number=1)
    (tmp_path / "enh").mkdir()
    enhanced.save_as(tmp_path / "enh" / "volume.dcm")
    series = read_dicom_series(tmp_path / "single")
    volume = read_image(tmp_path / "enh" / "volume.dcm")
    assert volume.hu.shape == series.hu.shape == (3, 64, 64)
    assert np.array_equal(volume.hu, series.hu)
    assert volume.spacing_mm == pytest.approx(series.spacing_mm)
    assert np.allclose(volume.affine, series.affine)
    assert read_image(tmp_path / "enh").n_slices == 3  # a folder holding one enhanced file


# --------------------------------------------------------------------------------------------
# files of several series, names without SOP instance UIDs, the real compressed series


def test_read_dicom_files_reads_one_series_and_refuses_several(tmp_path):
    import pickle

    from l3seg_lib.errors import L3SegInputError
    from l3seg_lib.imageio.dicom import read_dicom_files
    from l3seg_lib.measurement.inputs import SeriesEntry

    hu, _ = body_phantom(64, 64)
    a = [write_dicom(tmp_path / f"a{k}.dcm", hu, position=(0, 0, 3.0 * k), series_uid="1.2.9.1") for k in range(3)]
    b = write_dicom(tmp_path / "b.dcm", hu, series_uid="1.2.9.2")
    vol = read_dicom_files(a, tmp_path / "series_1.2.9.1")
    assert vol.n_slices == 3 and vol.source == str(tmp_path / "series_1.2.9.1")
    with pytest.raises(L3SegInputError, match="belong to 2 series"):
        read_dicom_files([*a, b])
    entry = SeriesEntry(tmp_path, files=tuple(a), series_uid="1.2.9.1")
    assert pickle.loads(pickle.dumps(entry)) == entry  # travels to Dask workers


def test_slice_ids_unique_for_dotted_file_names_without_sop_uid(tmp_path):
    from l3seg_lib.imageio.dicom import read_dicom_series

    hu, _ = body_phantom(64, 64)
    uid = "1.2.826.0.1.3680043.8.498.1"
    for k in range(4):
        write_dicom(tmp_path / f"CT.1.2.{k + 5}", hu, series_uid=uid, spacing=(3.0, 3.0), position=(-100.0, -120.0, 50.0 + 3 * k),
                    drop=("SOPInstanceUID",))
    volume = read_dicom_series(tmp_path, check_hu=False)
    assert volume.hu.shape[0] == 4
    assert len(set(volume.slice_ids)) == 4


def test_compressed_dicom_series_hu(shared_data):
    folder = shared_data / "dicom_series"
    first = sorted(folder.iterdir())[0]
    assert pydicom.dcmread(first, stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    series = read_dicom_series(folder)
    assert series.hu.shape == (20, 512, 512)
    assert series.spacing_mm == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert np.all(np.diff(series.slice_locations_mm) > 0)  # inferior to superior
    assert np.percentile(series.hu, 1) == pytest.approx(-1024, abs=30)  # air
    body = series.hu[10][series.hu[10] > -500]
    fat = body[(body > -200) & (body < -30)]
    assert -120 < np.median(fat) < -70  # fat peak where fat belongs, so the intercept was applied
    single = read_dicom(first)
    clinical = clinical_for(single.patient_id, None, single.meta)
    assert clinical["weight_kg"] == 79.0 and clinical["height_m"] is None
