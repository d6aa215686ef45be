"""Resource limits checked from headers before any allocation, the smallest plausible image,
and messages that name the attribute that is wrong (issue 23)."""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib

import nibabel as nib
import numpy as np
import pytest
from helpers import body_phantom, write_dicom
from PIL import Image

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import ReadLimits, check_plausible_image
from l3seg_lib.imageio.dicom import read_dicom_files, read_dicom_series
from l3seg_lib.imageio.nifti import read_nifti
from l3seg_lib.imageio.png import read_png
from l3seg_lib.imageio.reader import read_image


def _nifti_header_file(path, shape, dtype=np.int16, payload=b"\0" * 64, sparse_to=None):
    """A NIfTI-1 file: a header claiming ``shape`` followed by ``payload`` only (or a sparse file
    ``sparse_to`` bytes long)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_qform(np.diag([0.8, 0.8, 3.0, 1.0]), code=1)
    hdr["vox_offset"] = 352
    with open(path, "wb") as f:
        f.write(hdr.binaryblock + b"\0\0\0\0")
        f.write(payload)
        if sparse_to is not None:
            f.truncate(sparse_to)
    return path


def _refused_quickly(fn, match):
    """``fn`` raises L3SegInputError matching ``match`` within 2 s, allocating under 16 MB."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(L3SegInputError, match=match) as info:
            fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MB before the refusal"
    return info.value


def test_nifti_header_claiming_30000x30000x3_is_refused_from_the_header(tmp_path):
    path = _nifti_header_file(tmp_path / "huge.nii", (30000, 30000, 3))
    err = _refused_quickly(lambda: read_image(path), r"NIfTI header \(dim\).*30000x30000x3")
    assert str(path) in str(err)
    # the same header on a sparse file that is as long as it claims
    sparse = _nifti_header_file(tmp_path / "sparse.nii", (30000, 30000, 3), sparse_to=356 + 30000 * 30000 * 3 * 2)
    _refused_quickly(lambda: read_nifti(sparse), r"30000x30000x3")


def test_nifti_header_claiming_more_than_the_file_holds_is_refused(tmp_path):
    path = _nifti_header_file(tmp_path / "short.nii", (512, 512, 40))
    _refused_quickly(lambda: read_nifti(path), r"claims .* bytes, but the file has .*truncated")
    gz = tmp_path / "short.nii.gz"
    import gzip
    gz.write_bytes(gzip.compress(path.read_bytes()))
    _refused_quickly(lambda: read_nifti(gz), r"more than a .*gzip file can hold")


def test_nifti_limits_are_parameters(tmp_path):
    hu, _ = body_phantom(64, 64)
    xyz = np.repeat(hu.T[:, :, None], 4, axis=2).astype(np.int16)
    path = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(xyz, np.diag([-3.0, -3.0, 3.0, 1.0])), str(path))
    assert read_nifti(path).hu.shape == (4, 64, 64)
    with pytest.raises(L3SegInputError, match=r"64x64x4 = 16,384 voxels; the limit is 10,000"):
        read_nifti(path, limits=ReadLimits(max_voxels=10_000))
    with pytest.raises(L3SegInputError, match=r"4 slices/frames .*the limit is 2"):
        read_image(path, limits=ReadLimits(max_frames=2))


def test_nifti_nan_voxels_are_refused_naming_them(tmp_path):
    hu, _ = body_phantom(64, 64)
    xyz = np.repeat(hu.T[:, :, None], 2, axis=2).astype(np.float32)
    xyz[3:6, 3:6, 0] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(xyz, np.diag([-3.0, -3.0, 3.0, 1.0])), str(path))
    for check_hu in (True, False):
        with pytest.raises(L3SegInputError, match=r"9 voxels are NaN"):
            read_image(path, check_hu=check_hu)


def test_dicom_header_claiming_a_huge_matrix_is_refused_before_decoding(tmp_path):
    hu, _ = body_phantom(64, 64)
    path = write_dicom(tmp_path / "huge.dcm", hu, Rows=60000, Columns=60000)
    err = _refused_quickly(lambda: read_image(path), r"Rows x Columns.*60000x60000 matrix")
    assert str(path) in str(err)
    frames = write_dicom(tmp_path / "frames.dcm", hu, NumberOfFrames="9000")
    _refused_quickly(lambda: read_image(frames), r"NumberOfFrames.*9000 slices/frames")
    # in a folder: the file is left out with the reason, and the folder refused listing it
    with pytest.raises(L3SegInputError, match=r"no axial CT image series.*huge.dcm: the DICOM header"):
        read_dicom_series(tmp_path)


def test_dicom_malformed_size_attributes_are_named(tmp_path):
    hu, _ = body_phantom(64, 64)
    path = write_dicom(tmp_path / "bits.dcm", hu, BitsAllocated=12)
    with pytest.raises(L3SegInputError, match=r"BitsAllocated 12"):
        read_image(path)


def test_series_limit_counts_all_slices(tmp_path):
    hu, _ = body_phantom(64, 64)
    files = [write_dicom(tmp_path / f"s{k}.dcm", hu, spacing=(3.0, 3.0), series_uid="1.2.3.4",
                         position=(-100.0, -120.0, 3.0 * k)) for k in range(3)]
    assert read_dicom_files(files, tmp_path).hu.shape == (3, 64, 64)
    with pytest.raises(L3SegInputError, match=r"the series .*3x64x64 = 12,288 voxels"):
        read_dicom_series(tmp_path, limits=ReadLimits(max_voxels=10_000))


def _png_with_ihdr(path, width, height):
    """An 8x8 grey PNG whose IHDR is rewritten to claim ``width`` x ``height``."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def test_png_size_is_checked_before_decoding(tmp_path):
    kw = dict(spacing_mm=(0.8, 0.8), window_hu=(-1000.0, 1000.0))
    path = _png_with_ihdr(tmp_path / "big.png", 20000, 20000)
    _refused_quickly(lambda: read_png(path, **kw), r"big.png: .*(IHDR|decompression bomb)")
    path = _png_with_ihdr(tmp_path / "wide.png", 8000, 9000)
    _refused_quickly(lambda: read_png(path, **kw), r"IHDR height x width\) claims a 9000x8000 matrix; the limit is 8192")
    ok = tmp_path / "ok.png"
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(ok)
    with pytest.raises(L3SegInputError, match=r"IHDR height x width.*100x100"):
        read_png(ok, limits=ReadLimits(max_voxels=5000), **kw)


@pytest.mark.parametrize("check_hu", [True, False])
def test_a_one_pixel_ct_is_refused_naming_the_matrix(tmp_path, check_hu):
    path = write_dicom(tmp_path / "one.dcm", np.full((1, 1), 40.0, np.float32))
    with pytest.raises(L3SegInputError, match=r"matrix is 1x1 pixels \(Rows x Columns\)"):
        read_image(path, check_hu=check_hu)


def test_plausible_image_needs_matrix_and_field_of_view(tmp_path):
    hu, _ = body_phantom(64, 64)
    small = write_dicom(tmp_path / "small.dcm", hu, spacing=(0.8, 0.7))
    read_image(small)  # below the plausible minimum, but only the floor is checked by default
    with pytest.raises(L3SegInputError, match=r"field of view is 51 x 45 mm \(matrix 64x64 x pixel spacing 0.8 x 0.7"):
        read_image(small, check_size=True)
    big = write_dicom(tmp_path / "big" / "big.dcm", hu, spacing=(3.0, 3.0))
    assert read_image(big, check_size=True).hu.shape == (1, 64, 64)
    with pytest.raises(L3SegInputError, match=r"matrix is 40x64 pixels"):
        check_plausible_image("x", (40, 64), (5.0, 5.0))


@pytest.mark.parametrize("tags, message", [
    ({"RescaleSlope": "0"}, r"RescaleSlope is 0"),
    ({"RescaleSlope": "nan"}, r"RescaleSlope is nan"),
    ({"RescaleSlope": "inf"}, r"RescaleSlope is inf"),
    ({"RescaleIntercept": "nan"}, r"RescaleIntercept is nan"),
])
def test_rescale_errors_name_the_attribute(tmp_path, tags, message):
    import pydicom.config

    hu, _ = body_phantom(64, 64)
    with pydicom.config.disable_value_validation():
        path = write_dicom(tmp_path / "r.dcm", hu, **tags)
    for check_hu in (True, False):
        with pytest.raises(L3SegInputError, match=message):
            read_image(path, check_hu=check_hu)


def test_nifti_infinite_scaling_is_refused_naming_it(tmp_path):
    hu, _ = body_phantom(64, 64)
    data = np.repeat(hu.T[:, :, None], 2, axis=2).astype(np.int16)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(np.diag([-3.0, -3.0, 3.0, 1.0]), code=1)
    hdr["vox_offset"] = 352
    hdr["scl_slope"], hdr["scl_inter"] = np.inf, 0.0  # nib.save would reset it: write the bytes
    path = tmp_path / "inf.nii"
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + data.tobytes(order="F"))
    with pytest.raises(L3SegInputError, match=r"scl_slope is inf"):
        read_image(path)
