"""Every transfer syntax CT exports use decodes to the right HU.

The files are encoded here, by the tests themselves: with pydicom (uncompressed, deflate, RLE,
JPEG-LS via pyjpegls, JPEG 2000 via pylibjpeg-openjpeg) and with imagecodecs (BSD-3, a test
dependency; libjpeg-turbo for JPEG baseline, extended 12-bit and lossless with each predictor,
OpenJPH for HTJ2K), wrapped into DICOM with pydicom's ``encapsulate``. Nothing is committed.
Decoding is l3seg's own path: pydicom with python-gdcm, pyjpegls and pylibjpeg-openjpeg.
"""

from __future__ import annotations

import imagecodecs
import numpy as np
import pydicom
import pytest
from helpers import body_phantom, write_dicom
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from l3seg_lib.imageio.dicom import read_dicom

HTJ2K_LOSSLESS = UID("1.2.840.10008.1.2.4.201")
HTJ2K = UID("1.2.840.10008.1.2.4.203")


@pytest.fixture(scope="module")
def hu() -> np.ndarray:
    """A 64 x 64 slice with air, fat, muscle, bone and texture: whole HU from -1024 to ~1000."""
    img, _ = body_phantom(64, 64)
    rng = np.random.default_rng(0)
    img = img + rng.integers(-15, 16, img.shape)
    img[28:34, 28:36] = 950.0  # bone
    return np.clip(img, -1024, 3071).astype(np.float32)


def _write(tmp_path, hu, syntax: UID, **tags):
    """An uncompressed CT file of ``hu`` (stored = HU + 1024, 12 bits) to re-encode."""
    path = write_dicom(tmp_path / f"{syntax.name[:30].replace(' ', '_')}.dcm", hu, BitsStored=12, HighBit=11, **tags)
    return path, pydicom.dcmread(path)


def _encapsulated(path, ds, frame: bytes, syntax: UID):
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return path


def _stored(ds) -> np.ndarray:
    return ds.pixel_array.astype(np.uint16)


UNCOMPRESSED_AND_NATIVE = [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, RLELossless]


@pytest.mark.parametrize("syntax", UNCOMPRESSED_AND_NATIVE, ids=lambda u: u.name)
def test_uncompressed_deflate_rle(tmp_path, hu, syntax):
    path, ds = _write(tmp_path, hu, syntax)
    if syntax == RLELossless:
        ds.compress(RLELossless)
        ds.save_as(path, enforce_file_format=True)
    elif syntax == ExplicitVRBigEndian:
        ds.PixelData = _stored(ds).astype(">u2").tobytes()
        ds.file_meta.TransferSyntaxUID = syntax
        pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=False, enforce_file_format=True)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(read_dicom(path).hu, hu)


@pytest.mark.parametrize("syntax, kwargs, max_err", [
    (JPEGLSLossless, {}, 0), (JPEGLSNearLossless, {"jls_error": 3}, 3),
    (JPEG2000Lossless, {}, 0), (JPEG2000, {"j2k_cr": [4]}, 200),
], ids=["jpeg-ls", "jpeg-ls near-lossless", "jpeg2000 lossless", "jpeg2000 lossy"])
def test_jpegls_and_jpeg2000(tmp_path, hu, syntax, kwargs, max_err):
    path, ds = _write(tmp_path, hu, syntax)
    ds.compress(syntax, **kwargs)
    ds.save_as(path, enforce_file_format=True)
    got = read_dicom(path).hu
    err = np.abs(got - hu)
    assert err.max() <= max_err
    if max_err:
        assert err.mean() < 15  # lossy, but HU stay HU


@pytest.mark.parametrize("predictor", range(1, 8))
def test_jpeg_lossless_every_predictor(tmp_path, hu, predictor):
    """JPEG Lossless process 14 (the most common lossless PACS export), predictors 1-7; SV1 too."""
    syntax = JPEGLosslessSV1 if predictor == 1 else JPEGLossless
    path, ds = _write(tmp_path, hu, syntax)
    frame = imagecodecs.jpeg8_encode(_stored(ds), lossless=True, predictor=predictor, bitspersample=12)
    _encapsulated(path, ds, frame, syntax)
    assert np.array_equal(read_dicom(path).hu, hu)


def test_jpeg_extended_12bit(tmp_path, hu):
    path, ds = _write(tmp_path, hu, JPEGExtended12Bit)
    frame = imagecodecs.jpeg8_encode(_stored(ds), level=95, bitspersample=12)
    _encapsulated(path, ds, frame, JPEGExtended12Bit)
    err = np.abs(read_dicom(path).hu - hu)
    assert err.mean() < 15 and np.median(err) < 10


def test_jpeg_baseline_8bit(tmp_path, hu):
    """8-bit JPEG baseline with a rescale slope (stored = (HU + 1024) / 8)."""
    stored = np.clip(np.round((hu + 1024) / 8), 0, 255).astype(np.uint8)
    path = write_dicom(tmp_path / "baseline.dcm", hu, BitsAllocated=8, BitsStored=8, HighBit=7,
                       RescaleSlope="8", RescaleIntercept="-1024")
    ds = pydicom.dcmread(path)
    _encapsulated(path, ds, imagecodecs.jpeg8_encode(stored, level=95), JPEGBaseline8Bit)
    got = read_dicom(path).hu
    assert np.abs(got - hu).mean() < 15


@pytest.mark.parametrize("syntax", [HTJ2K_LOSSLESS, HTJ2K], ids=["htj2k lossless", "htj2k lossy"])
def test_htj2k(tmp_path, hu, syntax):
    path, ds = _write(tmp_path, hu, syntax)
    lossless = syntax == HTJ2K_LOSSLESS
    frame = imagecodecs.htj2k_encode(_stored(ds), reversible=lossless)
    _encapsulated(path, ds, frame, syntax)
    err = np.abs(read_dicom(path).hu - hu)
    assert err.max() == 0 if lossless else err.mean() < 15


def test_pydicom_ct_small_reads_correctly():
    """pydicom's own CT_small.dcm: signed storage, PixelPaddingValue -2000, PatientAge 000Y."""
    from pydicom.data import get_testdata_file

    from l3seg_lib.data.clinical import clinical_for

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    img = read_dicom(path)
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert img.hu.shape == (128, 128)
    assert np.allclose(np.sort(img.hu.ravel()), np.sort(np.maximum(expected, -1024).ravel()))  # reoriented, same HU
    assert np.median(img.hu) == pytest.approx(np.median(expected))
    assert clinical_for(img.patient_id, None, img.meta)["age"] is None  # 000Y is a placeholder
