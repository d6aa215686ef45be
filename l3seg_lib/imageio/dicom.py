"""DICOM CT files, series folders and enhanced multi-frame CT (pydicom) -> HU in the canonical
orientation of :mod:`.ct`.

Pixel data of every transfer syntax CT exports use is decoded by pydicom with permissively
licensed plugins installed with l3seg: python-gdcm (JPEG baseline / extended / lossless, JPEG-LS,
JPEG 2000), pyjpegls (JPEG-LS), pylibjpeg-openjpeg (JPEG 2000, HTJ2K), imagecodecs (12-bit JPEG
Extended, see :mod:`.codecs`); RLE, deflate and the uncompressed syntaxes natively.

A series folder may hold more than the axial CT images: localizers (scouts), dose reports,
secondary captures and other series are skipped and listed (``volume.meta.skipped``). When
several axial CT series are eligible, :func:`choose_series` picks one by a documented rule.
Duplicate positions, uneven spacing and gantry tilt are reported in ``volume.meta.series_notes``.

Each file is parsed once: a folder's files are parsed while they are grouped into series (their
pixel data deferred, :data:`DEFER_BYTES`), the chosen series' pixel data fetched and decoded from
those datasets slice by slice, and the headers (pixel data dropped) kept in ``volume.meta.datasets``
for the DICOM SEG/SR written from the measured slices.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.errors
from pydicom.uid import UID

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio import codecs
from l3seg_lib.imageio.ct import (
    ACQUISITION_KEYWORDS,
    FLOOR_LIMITS,
    LOWEST_HU,
    MAX_AXIAL_TILT_DEG,
    CTImage,
    CTVolume,
    ImageMeta,
    ReadLimits,
    acquisition_from_keywords,
    canonicalize,
    check_claimed_size,
    check_pixel_spacing,
    check_plausible_hu,
    check_plausible_image,
    header_int,
    slice_as_volume,
)
from l3seg_lib.names import input_stem

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
"""SOP classes of (multi-frame) secondary capture images."""
DOSE_REPORT_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR",
                       "1.2.840.10008.5.1.4.1.1.88.68": "Radiopharmaceutical Radiation Dose SR"}
ENHANCED_CT_CLASSES = {"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
"""Enhanced CT and Legacy Converted Enhanced CT Image Storage (multi-frame, functional groups)."""
SHARP_KERNEL = re.compile(r"BONE|LUNG|SHARP|EDGE|DETAIL|\b[BI]R?([5-9]\d)|\bFC(5\d|8\d)|\bYC|\bYD", re.I)
"""Reconstruction kernels for bone or lung (not soft tissue)."""
TILT_NOTE_DEG = 0.5
"""Gantry tilt above this is reported."""
HU_CHECK_SLICES = 24
"""Slices of a series, spread evenly, on which the HU plausibility check runs."""

codecs.register()  # 12-bit JPEG Extended through imagecodecs


# --------------------------------------------------------------------------------------------
# reading headers


_PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}
"""Float, double float and integer pixel data: left unparsed (and deferred) by :func:`_parse_all`."""


def _parse_all(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Convert every element but the pixel data now (pydicom converts raw values when they are
    first used), so that a malformed value (a wrong length, an unknown VR) is found while the file
    is read, and refused, not later anywhere the attribute is looked up."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta is not ds:
        _parse_all(meta)
    for tag in list(ds.keys()):
        if tag in _PIXEL_TAGS:
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value or []:
                _parse_all(item)
    return ds


def _dcmread(path: Path, stop_before_pixels: bool = False, defer_size: int | None = None) -> pydicom.Dataset:
    """Parse a DICOM file with pydicom; an :class:`L3SegInputError` when it is not DICOM or is corrupt."""
    try:
        return _parse_all(pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, defer_size=defer_size))
    except pydicom.errors.InvalidDicomError as exc:
        raise L3SegInputError(path, f"not a DICOM file ({exc})") from None
    except MemoryError:
        raise
    except Exception as exc:  # pydicom raises many types for corrupt files (struct.error, BytesLengthException, ...)
        raise L3SegInputError(path, f"corrupt or truncated DICOM file ({type(exc).__name__}: {exc})") from None


def check_dicom_size(ds: pydicom.Dataset, path: Path, limits: ReadLimits | None = None) -> tuple[int, int, int]:
    """(NumberOfFrames, Rows, Columns) of a header, refused naming the attribute when malformed or
    when Rows x Columns x NumberOfFrames x BitsAllocated exceed ``limits`` (from the header alone,
    before the pixel data is read or decoded)."""
    rows = header_int(ds, "Rows", path)
    cols = header_int(ds, "Columns", path)
    frames = header_int(ds, "NumberOfFrames", path, default=1)
    bits = header_int(ds, "BitsAllocated", path, default=16)
    samples = header_int(ds, "SamplesPerPixel", path, default=1)
    if bits not in (1, 8, 16, 32, 64):
        raise L3SegInputError(path, f"BitsAllocated {bits} is not 1, 8, 16, 32 or 64")
    check_claimed_size(path, (frames, rows, cols), max(bits // 8, 1) * max(samples, 1), limits,
                       what="the DICOM header (NumberOfFrames x Rows x Columns x BitsAllocated)", frames_axis=0)
    return frames, rows, cols


def _require(ds: pydicom.Dataset, keyword: str, path: Path, why: str) -> Any:
    """The value of ``keyword`` in ``ds``; an :class:`L3SegInputError` saying ``why`` when it is missing or empty."""
    value = ds.get(keyword)
    if value is None or value == "":
        raise L3SegInputError(path, f"missing {keyword} ({why})")
    return value


DICOM_META_KEYWORDS = tuple(ACQUISITION_KEYWORDS)


def dicom_meta(ds: pydicom.Dataset) -> dict[str, Any]:
    """Patient and acquisition attributes as written in the file (strings; interpreted, with
    plausibility rules, by :mod:`l3seg_lib.data.clinical`)."""
    meta: dict[str, Any] = {}
    for keyword in DICOM_META_KEYWORDS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        meta[keyword] = "\\".join(str(v) for v in value) if isinstance(value, pydicom.multival.MultiValue) else str(value)
    return meta


def image_meta(ds: pydicom.Dataset, **fields: Any) -> ImageMeta:
    """Typed metadata of an image read from ``ds`` (its acquisition fields as written) and ``fields``."""
    return ImageMeta(acquisition=acquisition_from_keywords(dicom_meta(ds)), **fields)


def header_only(ds: pydicom.Dataset) -> pydicom.Dataset:
    """``ds`` with its pixel data dropped (kept as the source of DICOM SEG/SR, small)."""
    if "PixelData" in ds:
        del ds.PixelData
    for cached in ("_pixel_array", "_pixel_id"):
        if hasattr(ds, cached):
            setattr(ds, cached, None if cached == "_pixel_array" else {})
    return ds


def _orientation(iop: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines from ImageOrientationPatient; refused when malformed,
    degenerate or tilted more than :data:`MAX_AXIAL_TILT_DEG` from axial."""
    try:
        row_cos = np.array([float(v) for v in iop[:3]])
        col_cos = np.array([float(v) for v in iop[3:6]])
        if row_cos.shape != (3,) or col_cos.shape != (3,) or not np.all(np.isfinite([*row_cos, *col_cos])):
            raise ValueError
    except (TypeError, ValueError, IndexError, OverflowError):
        raise L3SegInputError(path, f"ImageOrientationPatient {iop!r} is malformed (expected six numbers)") from None
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
    return row_cos, col_cos


def _spacing(value: Any, path: Path) -> tuple[float, float]:
    """PixelSpacing as (row, col) in mm, checked to be present, numeric and plausible."""
    if value is None or value == "":
        raise L3SegInputError(path, "missing PixelSpacing (needed to compute areas in cm2)")
    try:
        row_mm, col_mm = (float(value[0]), float(value[1]))
    except (TypeError, ValueError, IndexError, OverflowError):
        raise L3SegInputError(path, f"PixelSpacing {value!r} is not two numbers") from None
    check_pixel_spacing((row_mm, col_mm), str(path))
    return row_mm, col_mm


def _position(value: Any, path: Path) -> np.ndarray:
    """ImagePositionPatient as an (x, y, z) array in mm (DICOM LPS); refused when malformed."""
    try:
        position = np.array([float(v) for v in value[:3]])
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ValueError
        return position
    except (TypeError, ValueError, IndexError, OverflowError):
        raise L3SegInputError(path, f"ImagePositionPatient {value!r} is malformed (expected three numbers)") from None


def dicom_affine(row_cos, col_cos, position, spacing, slice_vector) -> np.ndarray:
    """Affine from stored (col, row, slice) indices to RAS mm, from DICOM (LPS) geometry."""
    row_mm, col_mm = spacing
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_mm  # moving along a row = next column
    lps[:3, 1] = col_cos * row_mm
    lps[:3, 2] = slice_vector
    lps[:3, 3] = position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


# --------------------------------------------------------------------------------------------
# what a file is


def skip_reason(ds: pydicom.Dataset) -> str | None:
    """Why a DICOM object is not an axial CT image to measure (None when it is one)."""
    sop = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "").strip()
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if sop in DOSE_REPORT_CLASSES or (modality == "SR" and "DOSE" in str(ds.get("SeriesDescription", "")).upper()):
        return f"dose report ({DOSE_REPORT_CLASSES.get(sop, 'structured report')}), not an image"
    if sop.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture (a screenshot or derived picture), not a CT image in HU"
    if "Rows" not in ds or "Columns" not in ds:  # works on headers read without the pixel data
        name = UID(sop).name if sop else "unknown SOP class"
        return f"no image ({modality or 'no modality'} {name})"
    if "LOCALIZER" in image_type or "SCOUT" in str(ds.get("SeriesDescription", "")).upper():
        return "localizer (scout) image"
    if modality != "CT":
        return f"wrong modality {modality!r}: body composition in HU needs a CT image" if modality else \
            "missing Modality; cannot confirm the image is CT"
    iop = ds.get("ImageOrientationPatient")
    if iop is not None:
        try:
            _orientation(iop, Path("-"))
        except L3SegInputError as exc:
            if "not an axial slice" in exc.problem:
                return exc.problem
    return None


# --------------------------------------------------------------------------------------------
# pixel data -> HU


def _decode(ds: pydicom.Dataset, path: Path, limits: ReadLimits | None = None) -> np.ndarray:
    """The stored pixel values, (rows, cols) or (frames, rows, cols); a clear error naming the
    transfer syntax when it cannot be decoded."""
    if header_int(ds, "SamplesPerPixel", path, default=1) != 1:
        raise L3SegInputError(path, "colour DICOM (SamplesPerPixel > 1) is not a CT image in HU")
    if "PixelData" not in ds:
        raise L3SegInputError(path, "the file has no pixel data")
    check_dicom_size(ds, path, limits)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable data
        name = getattr(syntax, "name", syntax)
        need = ""
        try:
            from pydicom.pixels import get_decoder

            missing = get_decoder(syntax).missing_dependencies if syntax else []
            if missing:
                need = f"; a decoder needs: {'; '.join(missing)}"
        except (NotImplementedError, ValueError, TypeError):
            need = "; pydicom has no decoder for this transfer syntax"
        raise L3SegInputError(path, f"pixel data cannot be decoded (transfer syntax {name}): {exc}{need}") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))
    expected = (frames, *expected) if frames > 1 else expected
    if stored.shape != expected:
        raise L3SegInputError(path, f"pixel data shape {stored.shape} does not match the header {expected}")
    return stored


def padding_mask(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray | None:
    """Pixels marked as padding (outside the reconstruction circle) by PixelPaddingValue, or the
    range PixelPaddingValue..PixelPaddingRangeLimit; None when the file declares no padding."""
    value = ds.get("PixelPaddingValue")
    if value is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    try:
        lo, hi = (int(value), int(value)) if limit is None else sorted((int(value), int(limit)))
    except (TypeError, ValueError, OverflowError):
        return None  # a malformed PixelPaddingValue marks nothing
    mask = (stored >= lo) & (stored <= hi)
    return mask if mask.any() else None


def _rescale(item: Any, path: Path) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of a dataset or functional-group item, both required for HU."""
    slope = _require(item, "RescaleSlope", path, "HU must come from RescaleSlope and RescaleIntercept")
    intercept = _require(item, "RescaleIntercept", path, "HU must come from RescaleSlope and RescaleIntercept")
    values = []
    for keyword, value in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
        try:
            values.append(float(value))
        except (TypeError, ValueError, OverflowError):
            raise L3SegInputError(path, f"{keyword} {value!r} is not a number (HU = stored x RescaleSlope + "
                                        f"RescaleIntercept)") from None
        if not np.isfinite(values[-1]):
            raise L3SegInputError(path, f"{keyword} is {values[-1]} (HU = stored x RescaleSlope + RescaleIntercept "
                                        f"needs finite numbers)")
    if values[0] == 0:
        raise L3SegInputError(path, "RescaleSlope is 0: every pixel would have the same HU (RescaleSlope is "
                                    "usually 1)")
    return values[0], values[1]


def _intercept_hint(intercepts: set[float]) -> str:
    """Hint for an implausible-HU error naming the RescaleIntercept value(s) found."""
    shown = ", ".join(f"{v:g}" for v in sorted(intercepts))
    return (f"Likely cause: a wrong RescaleIntercept (the file says {shown}; CT stored as unsigned values "
            f"usually needs -1024) or raw values exported without rescaling.")


# --------------------------------------------------------------------------------------------
# one slice of a series: a single-frame file or one frame of an enhanced multi-frame file


@dataclass
class _Slice:
    """Geometry and HU rescale of one axial slice (a single-frame file or one frame of an enhanced CT)."""
    path: Path
    header: pydicom.Dataset
    frame: int | None
    """Frame index in an enhanced multi-frame file; None for a single-frame file."""
    row_cos: np.ndarray
    col_cos: np.ndarray
    position: np.ndarray
    spacing: tuple[float, float]
    slope: float
    intercept: float
    thickness: float | None
    instance: int

    @property
    def name(self) -> str:
        """File name, with the frame number (1-based) for a frame of a multi-frame file."""
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame + 1}"


def _optional_number(item: Any, keyword: str, path: Path) -> float | None:
    """A numeric attribute that may be absent (SliceThickness, SliceLocation): None when absent
    or empty, refused naming it when it is not a finite number."""
    value = item.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise L3SegInputError(path, f"{keyword} {value!r} is not a number") from None
    if not np.isfinite(number):
        raise L3SegInputError(path, f"{keyword} is {number}")
    return number


def _single_frame_slice(path: Path, ds: pydicom.Dataset) -> _Slice:
    """The :class:`_Slice` of a single-frame CT file (position from ImagePositionPatient, else SliceLocation)."""
    row_cos, col_cos = _orientation(_require(ds, "ImageOrientationPatient", path, "needed to confirm the slice is axial"),
                                    path)
    ipp = ds.get("ImagePositionPatient") or [0.0, 0.0, _optional_number(ds, "SliceLocation", path) or 0.0]
    slope, intercept = _rescale(ds, path)
    return _Slice(path, ds, None, row_cos, col_cos, _position(ipp, path), _spacing(ds.get("PixelSpacing"), path),
                  slope, intercept, _optional_number(ds, "SliceThickness", path),
                  header_int(ds, "InstanceNumber", path, default=0))


def _functional_group(ds: pydicom.Dataset, frame: int, sequence: str) -> Any:
    """Item of a functional-group ``sequence`` for one frame: per-frame first, then shared."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and frame < len(per) and sequence in per[frame] and len(per[frame][sequence].value):
        return per[frame][sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared is not None and len(shared) and sequence in shared[0] and len(shared[0][sequence].value):
        return shared[0][sequence][0]
    return None


def _enhanced_slices(path: Path, ds: pydicom.Dataset) -> list[_Slice]:
    """One slice per frame of an enhanced (multi-frame) CT, from its functional groups."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    out = []
    for i in range(n):
        where = f"{path} frame {i + 1}"
        plane = _functional_group(ds, i, "PlaneOrientationSequence")
        pos = _functional_group(ds, i, "PlanePositionSequence")
        measures = _functional_group(ds, i, "PixelMeasuresSequence")
        if plane is None or pos is None or measures is None:
            raise L3SegInputError(path, f"frame {i + 1}: the functional groups lack plane orientation, position "
                                        f"or pixel measures")
        row_cos, col_cos = _orientation(plane.get("ImageOrientationPatient"), Path(where))
        transform = _functional_group(ds, i, "PixelValueTransformationSequence") or ds
        slope, intercept = _rescale(transform, path)
        out.append(_Slice(path, ds, i, row_cos, col_cos, _position(pos.get("ImagePositionPatient"), path),
                          _spacing(measures.get("PixelSpacing"), path), slope, intercept,
                          _optional_number(measures, "SliceThickness", path), i + 1))
    return out


# --------------------------------------------------------------------------------------------
# single files


def read_dicom(path: str | Path, check_hu: bool = True, limits: ReadLimits | None = None) -> CTImage:
    """Read one axial single-frame CT DICOM file to HU (RescaleSlope/RescaleIntercept), canonical
    orientation. Padding pixels (PixelPaddingValue) become -1024 HU."""
    path = Path(path)
    ds = _read_checked(path, limits)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise L3SegInputError(path, "multi-frame (enhanced) CT: read it as a volume (read_image / read_dicom_volume)")
    return _single_image(path, ds, check_hu, limits)


def _read_checked(path: Path, limits: ReadLimits | None = None) -> pydicom.Dataset:
    """The whole file (read once, its pixel data deferred until decoded), refused when it is not
    an axial CT image or its header claims more than ``limits`` allow."""
    if not path.is_file():
        raise L3SegInputError(path, "file not found")
    ds = _dcmread(path, defer_size=DEFER_BYTES)
    reason = skip_reason(ds)
    if reason is not None:
        raise L3SegInputError(path, reason)
    check_dicom_size(ds, path, limits)
    return ds


def read_dicom_file(path: str | Path, check_hu: bool = True, limits: ReadLimits | None = None) -> CTVolume:
    """One DICOM file, read once, as a volume: a single-frame CT slice (a one-slice volume) or an
    enhanced multi-frame CT."""
    path = Path(path)
    ds = _read_checked(path, limits)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return _assemble(path, _enhanced_slices(path, ds), check_hu, [], limits)
    return slice_as_volume(_single_image(path, ds, check_hu, limits))


def _single_image(path: Path, ds: pydicom.Dataset, check_hu: bool, limits: ReadLimits | None = None) -> CTImage:
    """One single-frame CT file to a :class:`CTImage` in HU, canonical orientation (padding and
    values below -1024 HU become air)."""
    sl = _single_frame_slice(path, ds)
    check_plausible_image(path, (header_int(ds, "Rows", path), header_int(ds, "Columns", path)), sl.spacing,
                          FLOOR_LIMITS)
    stored = _decode(ds, path, limits)
    pad = padding_mask(ds, stored)
    hu = (stored.astype(np.float32) * sl.slope + sl.intercept).astype(np.float32)
    del stored
    header_only(ds)
    if check_hu:
        check_plausible_hu(hu, str(path), pad, _intercept_hint({sl.intercept}))
    if pad is not None:
        hu[pad] = LOWEST_HU
    hu = np.maximum(hu, LOWEST_HU)  # outside the reconstruction circle -> air
    affine = dicom_affine(sl.row_cos, sl.col_cos, sl.position, sl.spacing,
                          np.cross(sl.row_cos, sl.col_cos) * (sl.thickness or 1.0))
    xyz, can_affine, transform = canonicalize(hu.T[:, :, None], affine, str(path))
    return CTImage(
        hu=np.ascontiguousarray(xyz[:, :, 0].T),
        patient_id=str(ds.get("PatientID", "") or path.parent.name),
        slice_id=str(ds.get("SOPInstanceUID", "") or input_stem(path)),
        source=str(path),
        affine=can_affine,
        slice_location_mm=float(sl.position[2]),
        stored_transform=transform,
        meta=image_meta(ds, source_files=[str(path)], datasets=[ds]),
    )


def is_multiframe(path: str | Path) -> bool:
    """Whether a DICOM file holds several frames (an enhanced CT volume)."""
    ds = _dcmread(Path(path), stop_before_pixels=True)
    return int(ds.get("NumberOfFrames", 1) or 1) > 1


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


# --------------------------------------------------------------------------------------------
# series


@dataclass
class SeriesCandidate:
    """One eligible axial CT series in a folder (or one enhanced multi-frame file)."""

    uid: str
    files: list[tuple[Path, pydicom.Dataset]]
    note: str = ""
    """Why this group is not the whole SeriesInstanceUID (:func:`split_by_patient`), or ``""``."""

    @property
    def first(self) -> pydicom.Dataset:
        """The first file's dataset (representative header of the series)."""
        return self.files[0][1]

    @property
    def n_slices(self) -> int:
        """Number of slices in the series (frames of multi-frame files counted)."""
        return sum(int(ds.get("NumberOfFrames", 1) or 1) for _, ds in self.files)

    @property
    def description(self) -> str:
        """One-line summary: series number, description, kernel, slice thickness (mm) and slice count."""
        ds = self.first
        parts = [f"series {ds.get('SeriesNumber', '?')}", str(ds.get("SeriesDescription", "") or "").strip(),
                 f"kernel {ds.get('ConvolutionKernel', '?')}", f"{self.thickness or '?'} mm",
                 f"{self.n_slices} slices"]
        return ", ".join(p for p in parts if p)

    @property
    def thickness(self) -> float | None:
        """Slice thickness in mm (SliceThickness, else the shared PixelMeasuresSequence); None when absent."""
        value = self.first.get("SliceThickness")
        if value in (None, ""):
            groups = self.first.get("SharedFunctionalGroupsSequence")
            try:
                value = groups[0].PixelMeasuresSequence[0].SliceThickness
            except (TypeError, AttributeError, IndexError, KeyError):
                return None
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    def rank(self) -> tuple:
        """Sort key of :func:`choose_series` (smaller is preferred)."""
        ds = self.first
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        derived = bool(image_type) and image_type[0] != "ORIGINAL"
        kernel = f"{ds.get('ConvolutionKernel', '')} {ds.get('SeriesDescription', '')}"
        sharp = bool(SHARP_KERNEL.search(kernel))
        t = self.thickness
        usual = t is not None and 2.0 <= t <= 5.0
        return (derived, sharp, not usual, -self.n_slices, int(ds.get("SeriesNumber", 0) or 0), self.uid)


SERIES_RULE = ("original images before derived ones; soft-tissue kernels before bone or lung kernels; "
               "slice thickness 2-5 mm before thinner or thicker; then the most slices; then the lowest SeriesNumber")
"""How :func:`choose_series` picks one series among several eligible ones (documented in docs/inputs.md)."""


def scan_folder(folder: str | Path, limits: ReadLimits | None = None
                ) -> tuple[list[SeriesCandidate], list[tuple[str, str]]]:
    """The eligible axial CT series in a folder, and the files skipped with the reason. Each file
    is parsed once, its pixel data deferred (:func:`_read_whole`); files without the DICOM preamble
    are passed over, as :func:`list_dicom_files` does."""
    folder = Path(folder)
    if not folder.is_dir():
        raise L3SegInputError(folder, "folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    candidates, skipped = group_series(files, whole=True, limits=limits)
    if not candidates and all(why is None for _, why in skipped):
        raise L3SegInputError(folder, "contains no DICOM files")
    return candidates, [(name, why if why is not None else NOT_DICOM) for name, why in skipped]


NOT_DICOM = "not a DICOM file (no DICM preamble): not read"
"""Why a file of a series folder that is not DICOM (a note, a truncated file) is left out."""


DEFER_BYTES = 64 * 1024
"""Values larger than this (the pixel data) are read when they are decoded, not while a folder
is scanned: the headers of a whole folder are parsed once, and its pixels are not held in memory
before the chosen series is decoded slice by slice."""


def _read_whole(path: Path) -> pydicom.Dataset | None:
    """The file parsed once, its pixel data deferred (:data:`DEFER_BYTES`: fetched when decoded),
    or None when it is not a DICOM file (no preamble). When only the pixel data is unreadable,
    its header: the series is refused when it is decoded."""
    try:
        return _parse_all(pydicom.dcmread(path, defer_size=DEFER_BYTES))
    except pydicom.errors.InvalidDicomError:
        try:
            if not pydicom.misc.is_dicom(path):
                return None
        except OSError as exc:
            raise L3SegInputError(path, f"cannot be read ({exc})") from None
        return _dcmread(path, stop_before_pixels=True)
    except MemoryError:
        raise
    except Exception:  # corrupt: the header alone, or an L3SegInputError naming the problem
        return _dcmread(path, stop_before_pixels=True)


GEOMETRY_KEY = ("FrameOfReferenceUID", "PatientID", "StudyInstanceUID", "SeriesNumber", "SeriesDescription",
                "ConvolutionKernel", "SliceThickness", "Rows", "Columns", "ImageOrientationPatient", "PixelSpacing")
"""Attributes that files without a SeriesInstanceUID (anonymised exports) must share, with a
FrameOfReferenceUID, to be one series (:func:`series_key`)."""


def series_key(ds: pydicom.Dataset) -> str:
    """Which series a header belongs to: its SeriesInstanceUID; without one (an anonymiser removed
    it), ``geometry-<FrameOfReferenceUID>-<hash>`` of :data:`GEOMETRY_KEY` (the same frame of
    reference, patient, reconstruction and geometry), or ``""`` when the frame of reference is
    missing too (nothing says which files belong together)."""
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if uid:
        return uid
    frame = str(ds.get("FrameOfReferenceUID", "") or "").strip()
    if not frame:
        return ""

    def norm(value: Any) -> str:
        """A header value as text for the geometry hash (numbers to 3 decimals, multi-values joined by backslashes)."""
        values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
        out = []
        for v in values:
            try:
                out.append(f"{float(v):.3f}")
            except (TypeError, ValueError):
                out.append(str(v if v is not None else "").strip())
        return "\\".join(out)

    text = "|".join(norm(ds.get(k)) for k in GEOMETRY_KEY)
    return f"geometry-{frame}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def group_series(files: list[Path], whole: bool = False, limits: ReadLimits | None = None
                 ) -> tuple[list[SeriesCandidate], list[tuple[str, str]]]:
    """DICOM files grouped into eligible axial CT series by :func:`series_key` (each enhanced
    multi-frame file is a volume of its own), and the files skipped with the reason (unreadable,
    or not an axial CT image: :func:`skip_reason`). Only headers are read; with ``whole``, whole
    files (kept for decoding, so that each file is read once), and files that are not DICOM at
    all are listed with the reason None."""
    by_series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    skipped: list[tuple[str, str]] = []
    for p in files:
        try:
            ds = _read_whole(p) if whole else _dcmread(p, stop_before_pixels=True)
        except L3SegInputError as exc:
            skipped.append((p.name, exc.problem))
            continue
        if ds is None:
            skipped.append((p.name, None))  # type: ignore[arg-type]
            continue
        reason = skip_reason(ds)
        if reason is None:
            try:
                check_dicom_size(ds, p, limits)
            except L3SegInputError as exc:
                reason = exc.problem
        if reason is not None:
            skipped.append((p.name, reason))
            continue
        key = series_key(ds)
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            key = f"{key}/{p.name}"  # each enhanced file is a volume of its own
        by_series.setdefault(key, []).append((p, ds))
    candidates = [c for uid, items in by_series.items() for c in split_by_patient(uid, items)]
    return candidates, skipped


IDENTITY_KEYWORDS = ("PatientID", "StudyInstanceUID")
"""Attributes every file of one series must share: files that share a SeriesInstanceUID but differ
in these (a careless anonymiser; a hand-made folder of single-slice exports) are never one series."""
SPLIT_NOTE = "SeriesInstanceUID shared by"
"""How the note of a series split by :func:`split_by_patient` begins (a review flag repeats it)."""


def _identity(ds: pydicom.Dataset) -> tuple[str, ...]:
    """The :data:`IDENTITY_KEYWORDS` of a header, as stripped text."""
    return tuple(str(ds.get(k, "") or "").strip() for k in IDENTITY_KEYWORDS)


def split_by_patient(key: str, items: list[tuple[Path, pydicom.Dataset]]) -> list[SeriesCandidate]:
    """The files of one :func:`series_key` as one :class:`SeriesCandidate`, or, when they differ in
    PatientID or StudyInstanceUID, one candidate per (PatientID, StudyInstanceUID), each keyed
    ``<key>~<hash of the pair>`` and carrying a note that says so (never one patient's slices
    taken for duplicates of another's)."""
    groups: dict[tuple[str, ...], list[tuple[Path, pydicom.Dataset]]] = {}
    for item in items:
        groups.setdefault(_identity(item[1]), []).append(item)
    if len(groups) == 1 or not key:  # no key: nothing says these files belong together anyway
        return [SeriesCandidate(key, items)]
    uid = key.split("/")[0]
    patients = len({ident[0] for ident in groups})
    out = []
    for ident, group in groups.items():
        digest = hashlib.sha1("\0".join(ident).encode()).hexdigest()[:8]
        note = (f"{SPLIT_NOTE} {len(groups)} patient/study pairs ({patients} PatientIDs) in {len(items)} files; "
                f"split by PatientID and StudyInstanceUID: this part is PatientID {ident[0]!r}, "
                f"StudyInstanceUID {ident[1] or 'none'} ({len(group)} file(s)). Check the export or anonymiser")
        out.append(SeriesCandidate(f"{key}~{digest}", group, note))
    return out


def choose_series(candidates: list[SeriesCandidate]) -> tuple[SeriesCandidate, list[tuple[str, str]]]:
    """The series to measure among eligible ones (:data:`SERIES_RULE`) and each file of the others,
    listed with why."""
    ranked = sorted(candidates, key=SeriesCandidate.rank)
    chosen = ranked[0]
    others = []
    for c in ranked[1:]:
        if c.note and chosen.note and c.uid.split("~")[0] == chosen.uid.split("~")[0]:
            why = (f"another patient or study (PatientID {str(c.first.get('PatientID', ''))!r}) under the same "
                   f"SeriesInstanceUID; measured PatientID {str(chosen.first.get('PatientID', ''))!r} "
                   f"({SERIES_RULE}); give these files a folder of their own to measure them")
        else:
            why = f"another eligible series ({c.description}); chose {chosen.description} ({SERIES_RULE})"
        others += [(p.name, why) for p, _ in c.files]
    return chosen, others


def read_dicom_series(folder: str | Path, check_hu: bool = True, series_uid: str | None = None,
                      limits: ReadLimits | None = None) -> CTVolume:
    """Read the axial CT series of a folder (see the module docstring), slices sorted by
    ImagePositionPatient (inferior first)."""
    folder = Path(folder)
    candidates, skipped = scan_folder(folder, limits)
    if not candidates:
        listing = "; ".join(f"{name}: {why}" for name, why in skipped[:5])
        raise L3SegInputError(folder, f"holds no axial CT image series ({listing})")
    if series_uid is not None:
        match = [c for c in candidates if c.uid == series_uid or c.uid.split("/")[0].split("~")[0] == series_uid]
        if not match:
            raise L3SegInputError(folder, f"series {series_uid} not found; present: {sorted(c.uid for c in candidates)}")
        chosen, others = match[0], []
    else:
        chosen, others = choose_series(candidates)
    return _read_candidate(folder, chosen, check_hu, skipped + others, limits)


def read_dicom_files(files: list[str | Path], source: str | Path | None = None, check_hu: bool = True,
                     limits: ReadLimits | None = None, notes: tuple[str, ...] | list[str] = ()) -> CTVolume:
    """Read DICOM files that form one series (e.g. a group of :func:`group_series` among files
    lying loose in a folder) as a volume named ``source`` (default: their folder); files that are
    not axial CT images are skipped and listed, as in a series folder. ``notes`` (e.g. why the
    files were split from others sharing their SeriesInstanceUID) go first in the series notes."""
    paths = [Path(f) for f in files]
    if not paths:
        raise L3SegInputError(source or "-", "no DICOM files given")
    source = Path(source) if source is not None else paths[0].parent
    candidates, skipped = group_series(paths, whole=True, limits=limits)
    skipped = [(name, why if why is not None else "not a DICOM file") for name, why in skipped]
    if not candidates:
        listing = "; ".join(f"{name}: {why}" for name, why in skipped[:5])
        raise L3SegInputError(source, f"holds no axial CT image series ({listing})")
    if len(candidates) > 1:
        raise L3SegInputError(source, f"the files belong to {len(candidates)} series, not one: "
                                      f"{sorted(c.uid for c in candidates)}")
    return _read_candidate(source, candidates[0], check_hu, skipped, limits, list(notes))


def _read_candidate(source: Path, chosen: SeriesCandidate, check_hu: bool, skipped: list[tuple[str, str]],
                    limits: ReadLimits | None = None, notes: list[str] | None = None) -> CTVolume:
    """The chosen series' slices (single-frame files and frames of enhanced files) assembled into a
    volume (``notes`` and the candidate's own note first in its series notes)."""
    slices: list[_Slice] = []
    for p, ds in chosen.files:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            slices += _enhanced_slices(p, ds if "PixelData" in ds else _dcmread(p))
        else:
            slices.append(_single_frame_slice(p, ds))
    notes = list(dict.fromkeys([*(notes or []), *([chosen.note] if chosen.note else [])]))
    return _assemble(source, slices, check_hu, skipped, limits, notes)


def read_dicom_volume(path: str | Path, check_hu: bool = True, limits: ReadLimits | None = None) -> CTVolume:
    """Read an enhanced (multi-frame) CT file as a volume."""
    path = Path(path)
    ds = _read_checked(path, limits)
    return _assemble(path, _enhanced_slices(path, ds), check_hu, [], limits)


def _assemble(source: Path, slices: list[_Slice], check_hu: bool, skipped: list[tuple[str, str]],
              limits: ReadLimits | None = None, notes: list[str] | None = None) -> CTVolume:
    """Sort, check and stack slices into a canonical volume; report what was odd (after ``notes``)."""
    notes = list(notes or [])
    ref = slices[0]
    for s in slices[1:]:
        if (s.header.get("Rows"), s.header.get("Columns")) != (ref.header.get("Rows"), ref.header.get("Columns")):
            raise L3SegInputError(s.path, f"size {s.header.get('Rows')}x{s.header.get('Columns')} differs from "
                                          f"{ref.name} in the same series")
        if not (np.allclose(s.row_cos, ref.row_cos, atol=1e-3) and np.allclose(s.col_cos, ref.col_cos, atol=1e-3)):
            raise L3SegInputError(s.path, f"ImageOrientationPatient differs from {ref.name} in the same series")
        if not np.allclose(s.spacing, ref.spacing, rtol=1e-3):
            raise L3SegInputError(s.path, f"PixelSpacing {s.spacing} differs from {ref.name} {ref.spacing}")
    normal = np.cross(ref.row_cos, ref.col_cos)
    slices = sorted(slices, key=lambda s: (float(s.position @ normal), s.instance))
    # duplicate positions: keep the first (lowest InstanceNumber), report the others
    kept, dropped = [slices[0]], []
    for s in slices[1:]:
        if abs(float((s.position - kept[-1].position) @ normal)) < 1e-3:
            dropped.append(s)
        else:
            kept.append(s)
    if dropped:
        notes.append(f"{len(dropped)} slice(s) at duplicate positions left out (kept the lowest InstanceNumber): "
                     + ", ".join(s.name for s in dropped[:5]))
        skipped = skipped + [(s.name, "duplicate ImagePositionPatient; another slice at this position is used")
                             for s in dropped]
    slices = kept
    positions = np.array([s.position for s in slices])
    if len(slices) > 1:
        gaps = np.diff(positions @ normal)
        step = (positions[-1] - positions[0]) / (len(slices) - 1)
        if np.ptp(gaps) > 0.1 * np.median(gaps) + 0.01:
            notes.append(f"uneven slice spacing {gaps.min():.2f}-{gaps.max():.2f} mm; slice positions are kept per slice")
        stack_dir = step / max(np.linalg.norm(step), 1e-9)
        tilt = float(np.degrees(np.arccos(min(1.0, abs(float(stack_dir @ normal))))))
        if tilt > TILT_NOTE_DEG:
            notes.append(f"gantry tilt {tilt:.1f} degrees (slices are sheared; areas are measured in each slice's plane)")
    else:
        step = normal * (ref.thickness or 1.0)
    body_tilt = float(np.degrees(np.arccos(min(1.0, abs(normal[2]) / np.linalg.norm(normal)))))
    if body_tilt > TILT_NOTE_DEG:
        notes.append(f"slices oblique by {body_tilt:.1f} degrees to the body axis")

    # one float32 array filled slice by slice (a 500-slice series is 0.5 GB; no stacked copies)
    rows, cols = int(ref.header.get("Rows")), int(ref.header.get("Columns"))
    check_claimed_size(source, (len(slices), rows, cols), 4, limits, frames_axis=0,
                       what="the series (slices x Rows x Columns, as float32 HU)")
    check_plausible_image(source, (rows, cols), ref.spacing, FLOOR_LIMITS)
    hu = np.empty((len(slices), rows, cols), np.float32)
    sample = set(np.linspace(0, len(slices) - 1, min(len(slices), HU_CHECK_SLICES)).round().astype(int).tolist())
    checked, checked_pad = [], []
    decoded: dict[Path, np.ndarray] = {}
    datasets: dict[Path, pydicom.Dataset] = {}
    for k, s in enumerate(slices):
        if s.frame is None:
            ds = s.header if "PixelData" in s.header else _dcmread(s.path)  # read while scanning, or read now
            stored = _decode(ds, s.path, limits)
        else:
            if s.path not in decoded:
                datasets[s.path] = s.header if "PixelData" in s.header else _dcmread(s.path)
                decoded[s.path] = _decode(datasets[s.path], s.path, limits)
            ds, stored = datasets[s.path], decoded[s.path][s.frame]
        pad = padding_mask(ds, stored)
        np.multiply(stored, s.slope, out=hu[k], casting="unsafe")
        hu[k] += s.intercept
        if k in sample:
            checked.append(hu[k].copy())
            checked_pad.append(np.zeros(stored.shape, bool) if pad is None else pad)
        if pad is not None:
            hu[k][pad] = LOWEST_HU
        if s.frame is None:
            s.header = header_only(ds)  # the pixel bytes are not kept; the header is, for SEG/SR
    for ds in datasets.values():
        header_only(ds)
    decoded.clear()
    if check_hu:  # on up to HU_CHECK_SLICES slices spread over the series
        check_plausible_hu(np.stack(checked), str(source), np.stack(checked_pad),
                           _intercept_hint({s.intercept for s in slices}))
    np.maximum(hu, LOWEST_HU, out=hu)
    affine = dicom_affine(ref.row_cos, ref.col_cos, positions[0], ref.spacing, step)
    xyz, can_affine, transform = canonicalize(hu.transpose(2, 1, 0), affine, str(source), contiguous=False)
    if transform[2, 1] < 0:  # slices were stored superior -> inferior along the canonical axis
        slices = slices[::-1]
    first = slices[0].header
    meta = image_meta(first, skipped=[{"file": name, "reason": why} for name, why in skipped], series_notes=notes,
                      source_files=[str(s.path) if s.frame is None else "" for s in slices],  # per slice
                      datasets=[s.header if s.frame is None else None for s in slices],
                      series_uid=str(first.get("SeriesInstanceUID", "") or ""))
    return CTVolume(
        hu=np.ascontiguousarray(xyz.transpose(2, 1, 0)),  # no copy when the series is stored canonically
        patient_id=str(first.get("PatientID", "") or (source.name if source.is_dir() else source.stem)),
        source=str(source),
        affine=can_affine,
        slice_ids=[str(s.header.get("SOPInstanceUID", "") or input_stem(s.path)) if s.frame is None
                   else f"{s.header.get('SOPInstanceUID', input_stem(s.path))}#{s.frame + 1}" for s in slices],
        slice_locations_mm=[float(s.position[2]) for s in slices],
        stored_transform=_in_plane(transform),
        meta=meta,
    )


def _in_plane(transform: np.ndarray) -> np.ndarray:
    """The in-plane part of a 3-axis orientation transform, keeping the slice axis fixed."""
    t = transform.copy()
    t[2] = (2, 1)
    return t
