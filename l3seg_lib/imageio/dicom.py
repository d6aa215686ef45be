"""DICOM CT files and series (pydicom) -> HU in the canonical orientation of :mod:`.ct`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.errors

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import (LOWEST_HU, MAX_AXIAL_TILT_DEG, CTImage, CTVolume, voxel_sizes, canonicalize,
                                  check_pixel_spacing, check_plausible_hu)



def _dcmread(path: Path, stop_before_pixels: bool = False) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except pydicom.errors.InvalidDicomError as exc:
        raise L3SegInputError(path, f"not a DICOM file ({exc})") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise L3SegInputError(path, f"corrupt or truncated DICOM file ({type(exc).__name__}: {exc})") from None


def _require(ds: pydicom.Dataset, keyword: str, path: Path, why: str) -> Any:
    value = ds.get(keyword)
    if value is None or value == "":
        raise L3SegInputError(path, f"missing {keyword} ({why})")
    return value


def _dicom_meta(ds: pydicom.Dataset) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    if sex in ("M", "F"):
        meta["sex"] = sex
    age = str(ds.get("PatientAge", "") or "").strip()
    if len(age) == 4 and age[:3].isdigit() and age[3] in "YMWD":
        factor = {"Y": 1.0, "M": 1 / 12, "W": 1 / 52.18, "D": 1 / 365.25}[age[3]]
        meta["age"] = round(int(age[:3]) * factor, 2)
    for keyword, key in (("PatientSize", "height_m"), ("PatientWeight", "weight_kg")):
        value = ds.get(keyword)
        if value not in (None, ""):
            try:
                if float(value) > 0:
                    meta[key] = float(value)
            except (TypeError, ValueError):
                pass
    for keyword in ("StudyDate", "SeriesDescription", "KVP", "ConvolutionKernel", "Manufacturer"):
        value = ds.get(keyword)
        if value not in (None, ""):
            meta[keyword] = str(value)
    return meta


def _dicom_geometry(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """Row cosine, column cosine, position and (row, col) spacing; raises if not axial."""
    spacing = _require(ds, "PixelSpacing", path, "needed to compute areas in cm2")
    try:
        row_mm, col_mm = (float(spacing[0]), float(spacing[1]))
    except (TypeError, ValueError, IndexError):
        raise L3SegInputError(path, f"PixelSpacing {spacing!r} is not two numbers") from None
    check_pixel_spacing((row_mm, col_mm), str(path))
    iop = _require(ds, "ImageOrientationPatient", path, "needed to confirm the slice is axial")
    ipp = ds.get("ImagePositionPatient") or [0.0, 0.0, float(ds.get("SliceLocation", 0.0) or 0.0)]
    try:
        row_cos = np.array([float(v) for v in iop[:3]])
        col_cos = np.array([float(v) for v in iop[3:6]])
        position = np.array([float(v) for v in ipp[:3]])
    except (TypeError, ValueError):
        raise L3SegInputError(path, f"ImageOrientationPatient {iop!r} or ImagePositionPatient is malformed") from None
    normal = np.cross(row_cos, col_cos)
    norm = np.linalg.norm(normal)
    if norm < 0.5:
        raise L3SegInputError(path, f"ImageOrientationPatient {list(iop)} is degenerate")
    tilt = np.degrees(np.arccos(min(1.0, abs(normal[2]) / norm)))
    if tilt > MAX_AXIAL_TILT_DEG:
        plane = "sagittal" if abs(normal[0]) > abs(normal[1]) else "coronal"
        raise L3SegInputError(
            path, f"not an axial slice: the slice normal is {tilt:.0f} degrees from the body axis "
            f"(looks {plane}); body composition at L3 needs an axial slice"
        )
    return row_cos, col_cos, position, (row_mm, col_mm)


def dicom_affine(row_cos, col_cos, position, spacing, slice_vector) -> np.ndarray:
    """Affine from stored (col, row, slice) indices to RAS mm, from DICOM (LPS) geometry."""
    row_mm, col_mm = spacing
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_mm  # moving along a row = next column
    lps[:3, 1] = col_cos * row_mm
    lps[:3, 2] = slice_vector
    lps[:3, 3] = position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _dicom_hu(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    modality = str(ds.get("Modality", "") or "").strip()
    if not modality:
        raise L3SegInputError(path, "missing Modality; cannot confirm the image is CT")
    if modality != "CT":
        raise L3SegInputError(path, f"wrong modality {modality!r}: body composition in HU needs a CT image")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise L3SegInputError(path, "multi-frame (enhanced) DICOM is not supported; export single-frame slices")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise L3SegInputError(path, "colour DICOM (SamplesPerPixel > 1) is not a CT image in HU")
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        _require(ds, keyword, path, "HU must come from RescaleSlope and RescaleIntercept")
    if "PixelData" not in ds:
        raise L3SegInputError(path, "the file has no pixel data")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise L3SegInputError(
            path, f"pixel data cannot be decoded (transfer syntax {name}): {exc}. "
            f"Compressed DICOM needs pylibjpeg with pylibjpeg-openjpeg (installed with l3seg)"
        ) from None
    expected = (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))
    if stored.shape != expected:
        raise L3SegInputError(path, f"pixel data shape {stored.shape} does not match Rows x Columns {expected}")
    hu = pydicom.pixels.apply_rescale(stored, ds).astype(np.float32)
    return hu


def read_dicom(path: str | Path, check_hu: bool = True) -> CTImage:
    """Read one axial CT DICOM file to HU (RescaleSlope/RescaleIntercept), canonical orientation."""
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "file not found")
    ds = _dcmread(path)
    row_cos, col_cos, position, spacing = _dicom_geometry(ds, path)
    hu = _dicom_hu(ds, path)
    if check_hu:
        check_plausible_hu(hu, str(path))
    hu = np.maximum(hu, LOWEST_HU)  # padding outside the reconstruction circle -> air
    thickness = float(ds.get("SliceThickness", 1.0) or 1.0)
    affine = dicom_affine(row_cos, col_cos, position, spacing, np.cross(row_cos, col_cos) * thickness)
    xyz, can_affine, transform = canonicalize(hu.T[:, :, None], affine, str(path))
    zooms = voxel_sizes(can_affine)
    return CTImage(
        hu=np.ascontiguousarray(xyz[:, :, 0].T),
        spacing_mm=(float(zooms[1]), float(zooms[0])),
        patient_id=str(ds.get("PatientID", "") or path.parent.name),
        slice_id=str(ds.get("SOPInstanceUID", "") or path.stem),
        source=str(path),
        affine=can_affine,
        slice_location_mm=float(position[2]),
        stored_transform=transform,
        meta=_dicom_meta(ds),
    )


def list_dicom_files(folder: str | Path) -> list[Path]:
    """DICOM files directly inside ``folder`` (files without the DICOM preamble are skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise L3SegInputError(folder, "folder not found")
    files = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            if pydicom.misc.is_dicom(path):
                files.append(path)
        except OSError as exc:
            raise L3SegInputError(path, f"cannot be read ({exc})") from None
    return files


def read_dicom_series(folder: str | Path, check_hu: bool = True, series_uid: str | None = None) -> CTVolume:
    """Read an axial CT series folder, slices sorted by ImagePositionPatient (inferior first)."""
    folder = Path(folder)
    files = list_dicom_files(folder)
    if not files:
        raise L3SegInputError(folder, "contains no DICOM files")
    headers = [(p, _dcmread(p, stop_before_pixels=True)) for p in files]
    by_series: dict[str, list] = {}
    for p, ds in headers:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))
    if series_uid is not None:
        if series_uid not in by_series:
            raise L3SegInputError(folder, f"series {series_uid} not found; present: {sorted(by_series)}")
        chosen = by_series[series_uid]
    elif len(by_series) > 1:
        listing = "; ".join(
            f"{uid} ({len(v)} files, {v[0][1].get('SeriesDescription', '')!s})" for uid, v in by_series.items()
        )
        raise L3SegInputError(folder, f"holds {len(by_series)} series, put each in its own folder: {listing}")
    else:
        chosen = next(iter(by_series.values()))

    geoms = []
    for p, ds in chosen:
        geoms.append((p, ds, *_dicom_geometry(ds, p)))
    ref = geoms[0]
    for p, ds, row_cos, col_cos, _, spacing in geoms[1:]:
        if (ds.get("Rows"), ds.get("Columns")) != (ref[1].get("Rows"), ref[1].get("Columns")):
            raise L3SegInputError(p, f"size {ds.get('Rows')}x{ds.get('Columns')} differs from {ref[0].name} in the same series")
        if not (np.allclose(row_cos, ref[2], atol=1e-3) and np.allclose(col_cos, ref[3], atol=1e-3)):
            raise L3SegInputError(p, f"ImageOrientationPatient differs from {ref[0].name} in the same series")
        if not np.allclose(spacing, ref[5], rtol=1e-3):
            raise L3SegInputError(p, f"PixelSpacing {spacing} differs from {ref[0].name} {ref[5]}")
    normal = np.cross(ref[2], ref[3])
    order = sorted(range(len(geoms)), key=lambda i: float(geoms[i][4] @ normal))
    geoms = [geoms[i] for i in order]
    positions = np.array([g[4] for g in geoms])
    dist = positions @ normal
    if len(geoms) > 1:
        gaps = np.diff(dist)
        if np.any(gaps < 1e-3):
            dup = geoms[int(np.argmin(gaps)) + 1][0]
            raise L3SegInputError(dup, "has the same ImagePositionPatient as another slice of the series")
        step = (positions[-1] - positions[0]) / (len(geoms) - 1)
        if np.ptp(gaps) > 0.1 * np.median(gaps) + 0.01:
            warnings.warn(f"{folder}: slices are unevenly spaced ({gaps.min():.2f}-{gaps.max():.2f} mm); "
                          f"slice positions are kept per slice", stacklevel=2)
    else:
        step = normal * float(ref[1].get("SliceThickness", 1.0) or 1.0)

    slices = []
    for p, _, *_ in geoms:
        ds = _dcmread(p)
        hu = _dicom_hu(ds, p)
        if check_hu:
            check_plausible_hu(hu, str(p))
        slices.append(np.maximum(hu, LOWEST_HU))
    stack = np.stack([s.T for s in slices], axis=-1)  # stored (col, row, slice)
    affine = dicom_affine(ref[2], ref[3], positions[0], ref[5], step)
    xyz, can_affine, transform = canonicalize(stack, affine, str(folder))
    if transform[2, 1] < 0:  # slices were stored superior -> inferior along the canonical axis
        geoms = geoms[::-1]
    zooms = voxel_sizes(can_affine)
    first = geoms[0][1]
    return CTVolume(
        hu=np.ascontiguousarray(xyz.transpose(2, 1, 0)),
        spacing_mm=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
        patient_id=str(first.get("PatientID", "") or folder.name),
        source=str(folder),
        affine=can_affine,
        slice_ids=[str(g[1].get("SOPInstanceUID", "") or g[0].stem) for g in geoms],
        slice_locations_mm=[float(g[4][2]) for g in geoms],
        stored_transform=_in_plane(transform),
        meta=_dicom_meta(first),
    )


def _in_plane(transform: np.ndarray) -> np.ndarray:
    """The in-plane part of a 3-axis orientation transform, keeping the slice axis fixed."""
    t = transform.copy()
    t[2] = (2, 1)
    return t


