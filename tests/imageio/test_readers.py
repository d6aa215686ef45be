"""Image loaders: DICOM files and series, NIfTI, PNG; canonical orientation; bad-input errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from helpers import body_phantom, write_dicom
from PIL import Image

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.dicom import read_dicom, read_dicom_series
from l3seg_lib.imageio.nifti import read_nifti
from l3seg_lib.imageio.png import read_png
from l3seg_lib.imageio.reader import image_kind, read_image


@pytest.fixture
def hu():
    return body_phantom(48, 64)[0]


def test_dicom_hu_spacing_and_meta(tmp_path, hu):
    path = write_dicom(tmp_path / "a.dcm", hu, spacing=(0.8, 0.7))
    img = read_dicom(path)
    assert np.allclose(img.hu, hu)
    assert img.spacing_mm == pytest.approx((0.8, 0.7))  # (row, col) as in PixelSpacing
    assert img.pixel_area_cm2 == pytest.approx(0.8 * 0.7 / 100)
    assert img.patient_id == "P001"
    assert img.meta.acquisition.patient_sex == "F" and img.meta.acquisition.patient_size == "1.65"  # as written; read by data.clinical


def test_dicom_rescale_slope_and_intercept(tmp_path, hu):
    path = write_dicom(tmp_path / "a.dcm", hu, RescaleSlope="2", RescaleIntercept="-2048")
    img = read_dicom(path, check_hu=False)
    # stored = HU + 1024, so HU' = 2 * (HU + 1024) - 2048 = 2 * HU
    assert np.allclose(img.hu, np.maximum(2 * hu, -1024))


def test_dicom_orientation_is_canonicalised(tmp_path, hu):
    ref = read_dicom(write_dicom(tmp_path / "ref.dcm", hu)).hu
    mirrored = read_dicom(write_dicom(tmp_path / "m.dcm", hu[:, ::-1], orientation=(-1, 0, 0, 0, 1, 0)))
    assert np.array_equal(mirrored.hu, ref)
    swapped = read_dicom(write_dicom(tmp_path / "t.dcm", np.ascontiguousarray(hu.T), spacing=(0.7, 0.8),
                                     orientation=(0, 1, 0, 1, 0, 0)))
    assert np.array_equal(swapped.hu, ref)
    assert swapped.spacing_mm == pytest.approx((0.8, 0.7))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"drop": ("PixelSpacing",)}, "missing PixelSpacing"),
        ({"Modality": "MR"}, "wrong modality 'MR'"),
        ({"drop": ("Modality",)}, "missing Modality"),
        ({"orientation": (0, 1, 0, 0, 0, -1)}, "not an axial slice"),
        ({"drop": ("RescaleIntercept",)}, "missing RescaleIntercept"),
        ({"RescaleIntercept": "0"}, "values do not look like HU"),
        ({"drop": ("ImageOrientationPatient",)}, "missing ImageOrientationPatient"),
        ({"PixelSpacing": ["0", "0"]}, "pixel spacing"),
    ],
)
def test_dicom_bad_header_errors_name_file(tmp_path, hu, kwargs, message):
    path = write_dicom(tmp_path / "bad.dcm", hu, **kwargs)
    with pytest.raises(L3SegInputError) as err:
        read_dicom(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_dicom_corrupt_and_truncated_files(tmp_path, hu):
    text = tmp_path / "notes.dcm"
    text.write_text("this is not DICOM")
    with pytest.raises(L3SegInputError, match="notes.dcm: not a DICOM file"):
        read_dicom(text)
    good = write_dicom(tmp_path / "good.dcm", hu)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:-2000])
    with pytest.raises(L3SegInputError, match="truncated.dcm"):
        read_dicom(truncated)


def test_series_sorted_inferior_to_superior(tmp_path, hu):
    uid = "1.2.3.4.5"
    for z, name in ((56.0, "c"), (50.0, "a"), (53.0, "b")):
        write_dicom(tmp_path / "s" / f"{name}.dcm", hu + z, position=(-100, -120, z), series_uid=uid)
    (tmp_path / "s" / "README.txt").write_text("not a DICOM file, skipped")
    vol = read_dicom_series(tmp_path / "s")
    assert vol.hu.shape == (3, 48, 64)
    assert vol.slice_locations_mm == [50.0, 53.0, 56.0]
    assert vol.spacing_mm == pytest.approx((3.0, 0.8, 0.7))
    assert np.allclose(vol.hu[:, 20, 30] - hu[20, 30], [50.0, 53.0, 56.0])
    one = vol.slice(1)
    assert one.slice_location_mm == 53.0 and one.spacing_mm == pytest.approx((0.8, 0.7))


def test_series_errors(tmp_path, hu):
    (tmp_path / "empty").mkdir()
    write_dicom(tmp_path / "sp" / "a.dcm", hu, series_uid="1.2.3", position=(0, 0, 0))
    write_dicom(tmp_path / "sp" / "b.dcm", hu, series_uid="1.2.3", position=(0, 0, 3), spacing=(0.9, 0.9))
    with pytest.raises(L3SegInputError, match="PixelSpacing .* differs"):
        read_dicom_series(tmp_path / "sp")
    with pytest.raises(L3SegInputError, match="contains no DICOM files"):
        read_dicom_series(tmp_path / "empty")


def _save_nifti(path, xyz, affine):
    nib.save(nib.Nifti1Image(xyz, affine), str(path))
    return path


def test_nifti_orientations_agree(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.integers(-1000, 200, size=(20, 16, 5)).astype(np.int16)
    xyz[0, 0, :] = -1000
    ras = np.diag([0.7, 0.8, 3.0, 1.0])
    las = ras.copy()
    las[0, 0] = -0.7  # x axis points left: same anatomy stored mirrored
    a = read_nifti(_save_nifti(tmp_path / "ras.nii.gz", xyz, ras))
    b = read_nifti(_save_nifti(tmp_path / "las.nii.gz", xyz[::-1].copy(), las))
    assert a.hu.shape == (5, 16, 20)
    assert np.array_equal(a.hu, b.hu)
    assert a.spacing_mm == pytest.approx((3.0, 0.8, 0.7))
    # canonical columns run toward the patient's left: RAS x (to the right) is reversed
    assert np.array_equal(a.hu[2], np.maximum(xyz[::-1, ::-1, 2].T, -1024))


def test_nifti_errors(tmp_path):
    sag = np.full((1, 16, 20), -1000, dtype=np.int16)
    with pytest.raises(L3SegInputError, match="not an axial slice"):
        read_nifti(_save_nifti(tmp_path / "sag.nii.gz", sag, np.eye(4)))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(L3SegInputError, match="bad.nii.gz: corrupt or unreadable NIfTI"):
        read_nifti(bad)
    with pytest.raises(L3SegInputError, match="missing.nii.gz: file not found"):
        read_nifti(tmp_path / "missing.nii.gz")


def test_png_hu_from_export_window(tmp_path):
    gray = np.array([[0, 51, 255], [102, 153, 204]], dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "img.png")
    img = read_png(tmp_path / "img.png", spacing_mm=(0.7, 0.7), window_hu=(-200, 800))
    assert np.allclose(img.hu, -200 + gray / 255 * 1000)
    assert not img.hu_calibrated
    with pytest.raises(L3SegInputError, match="no pixel spacing"):
        read_png(tmp_path / "img.png", spacing_mm=None, window_hu=(-200, 800))
    with pytest.raises(L3SegInputError, match="export window"):
        read_png(tmp_path / "img.png", spacing_mm=(0.7, 0.7), window_hu=None)
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(L3SegInputError, match="colour PNG"):
        read_png(tmp_path / "rgb.png", spacing_mm=(0.7, 0.7), window_hu=(-200, 800))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(L3SegInputError, match="broken.png: corrupt or unreadable PNG"):
        read_png(tmp_path / "broken.png", spacing_mm=(0.7, 0.7), window_hu=(-200, 800))


def test_image_kind_dispatch(tmp_path, hu):
    dcm = write_dicom(tmp_path / "noext", hu)
    assert image_kind(dcm) == "dicom"
    assert image_kind(tmp_path) == "dicom_series"
    assert read_image(dcm).n_slices == 1
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(L3SegInputError, match="unknown image format"):
        image_kind(tmp_path / "x.txt")
