"""Reading CT images: DICOM files and series (pydicom), NIfTI (nibabel) and 8-bit PNG exports.

Every image is returned in one canonical orientation, whatever its source:
arrays are indexed ``[z, row, col]`` (or ``[row, col]`` for one slice) with rows running
anterior -> posterior, columns patient right -> left (the radiological view) and z inferior ->
superior. Pixel spacing is ``(row_mm, col_mm)``: the distance between rows, then between columns.
Values are HU, from RescaleSlope/RescaleIntercept (DICOM) or the stored scaling (NIfTI).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pydicom.errors
from nibabel import orientations as nio
from PIL import Image, UnidentifiedImageError

from .errors import L3SegInputError

CANONICAL_AXCODES = ("L", "P", "S")
"""World directions of the canonical (col, row, z) array axes."""
MAX_AXIAL_TILT_DEG = 30.0
"""Largest angle between a slice normal and the body axis still accepted as axial (gantry tilt)."""
AIR_HU = -1000.0
LOWEST_HU = -1024.0


@dataclass
class CTImage:
    """One axial CT slice.

    ``hu`` is float32 HU with shape (rows, cols) in canonical orientation; ``spacing_mm`` is
    (row spacing, column spacing) in mm; ``affine`` maps (col, row, 0) indices to RAS mm.
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float]
    patient_id: str
    slice_id: str
    source: str
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    slice_location_mm: float | None = None
    hu_calibrated: bool = True
    """False when HU were reconstructed from an 8-bit windowed PNG (values outside the
    export window are clipped to its edges)."""
    stored_transform: np.ndarray | None = None
    """nibabel orientation transform from the file's stored pixel order to canonical order;
    used to bring masks stored in the same pixel order (PNG, Slice-O-Matic .tag) into line."""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def pixel_area_cm2(self) -> float:
        return self.spacing_mm[0] * self.spacing_mm[1] / 100.0

    def stored_to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Reorient a 2-D array given in this file's stored pixel order (rows, cols)."""
        if self.stored_transform is None:
            return array
        xyz = array.T[:, :, None]
        out = nio.apply_orientation(xyz, self.stored_transform)
        return np.ascontiguousarray(out[:, :, 0].T)


@dataclass
class CTVolume:
    """A stack of axial CT slices, ``hu`` shaped (z, rows, cols) in canonical orientation."""

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    """(z, row, col) spacing in mm."""
    patient_id: str
    source: str
    affine: np.ndarray
    """Maps canonical (col, row, z) indices to RAS mm."""
    slice_ids: list[str]
    slice_locations_mm: list[float]
    stored_transform: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    def slice(self, index: int) -> CTImage:
        """Slice ``index`` (canonical order, inferior -> superior) as a :class:`CTImage`."""
        if not 0 <= index < self.n_slices:
            raise L3SegInputError(self.source, f"slice index {index} is outside 0..{self.n_slices - 1}")
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ np.array([0.0, 0.0, index]) + self.affine[:3, 3]
        stored_2d = None
        if self.stored_transform is not None:
            stored_2d = self.stored_transform.copy()
        return CTImage(
            hu=self.hu[index],
            spacing_mm=(self.spacing_mm[1], self.spacing_mm[2]),
            patient_id=self.patient_id,
            slice_id=self.slice_ids[index],
            source=self.source,
            affine=affine,
            slice_location_mm=self.slice_locations_mm[index],
            stored_transform=stored_2d,
            meta=dict(self.meta),
        )


# --------------------------------------------------------------------------------------------
# orientation


def canonicalize(xyz: np.ndarray, affine: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorient a (i, j, k) array with its voxel->RAS ``affine`` to canonical (col, row, z).

    Returns the reoriented array, its affine and the orientation transform applied.
    Raises when an axis is more than :data:`MAX_AXIAL_TILT_DEG` away from the nearest world axis.
    """
    rzs = affine[:3, :3]
    zooms = np.sqrt((rzs**2).sum(axis=0))
    if np.any(zooms <= 0) or not np.all(np.isfinite(affine)):
        raise L3SegInputError(source, "the image geometry (affine) is degenerate: zero or missing voxel size")
    ornt = nio.io_orientation(affine)
    directions = rzs / zooms
    for axis, (world, _) in enumerate(ornt):
        if np.isnan(world):
            raise L3SegInputError(source, "the image axes cannot be matched to body axes (degenerate direction cosines)")
        cos = abs(directions[int(world), axis])
        if np.degrees(np.arccos(min(1.0, cos))) > MAX_AXIAL_TILT_DEG:
            raise L3SegInputError(
                source,
                f"image axis {axis} is {np.degrees(np.arccos(min(1.0, cos))):.0f} degrees oblique to the "
                f"nearest body axis; resample to an axial grid first",
            )
    transform = nio.ornt_transform(ornt, nio.axcodes2ornt(CANONICAL_AXCODES))
    out = nio.apply_orientation(xyz, transform)
    new_affine = affine @ nio.inv_ornt_aff(transform, xyz.shape)
    return np.ascontiguousarray(out), new_affine, transform


def _zooms(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def check_pixel_spacing(spacing: tuple[float, ...], source: str) -> None:
    """Refuse pixel spacings that cannot be right for a clinical CT (0.05-10 mm)."""
    for s in spacing:
        if not np.isfinite(s) or not 0.05 <= s <= 10.0:
            raise L3SegInputError(
                source, f"pixel spacing {tuple(round(float(x), 4) for x in spacing)} mm is not plausible "
                f"for CT (expected 0.05-10 mm per pixel)"
            )


def check_plausible_hu(hu: np.ndarray, source: str) -> None:
    """Refuse arrays that are not plausibly HU: an L3 slice always contains air near -1000 HU."""
    finite = hu[np.isfinite(hu)]
    if finite.size == 0:
        raise L3SegInputError(source, "the image contains no finite pixel values")
    low = float(np.percentile(finite, 0.5))
    if low > -700.0:
        raise L3SegInputError(
            source,
            f"values do not look like HU: the lowest 0.5% of pixels are at {low:.0f}, but a CT slice at L3 "
            f"contains air near -1000 HU (missing or wrong RescaleIntercept? raw stored values?). "
            f"Set data.check_hu: false only if the field of view truly contains no air.",
        )


# --------------------------------------------------------------------------------------------
# DICOM


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
    zooms = _zooms(can_affine)
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
    zooms = _zooms(can_affine)
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


# --------------------------------------------------------------------------------------------
# NIfTI


def _nifti_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def load_nifti(path: str | Path, as_labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI file as a 3-D (i, j, k) array with its affine; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "file not found")
    try:
        img = nib.load(str(path))
        if as_labels:
            data = np.asanyarray(img.dataobj)
        else:
            data = img.get_fdata(dtype=np.float32)
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors, ...
        raise L3SegInputError(path, f"corrupt or unreadable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 2:
        data = data[:, :, None]
    elif data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    elif data.ndim != 3:
        raise L3SegInputError(path, f"expected a 2-D or 3-D image, got shape {data.shape}")
    return data, img.affine


def read_nifti(path: str | Path, check_hu: bool = True) -> CTVolume:
    """Read a CT NIfTI volume (values in HU) into canonical orientation."""
    path = Path(path)
    data, affine = load_nifti(path)
    if check_hu:
        check_plausible_hu(data, str(path))
    xyz, can_affine, transform = canonicalize(np.maximum(data, LOWEST_HU).astype(np.float32), affine, str(path))
    zooms = _zooms(can_affine)
    check_pixel_spacing((zooms[1], zooms[0]), str(path))
    n = xyz.shape[2]
    if 1 in data.shape and n != 1:  # a single slice whose thin axis is not the body axis
        raise L3SegInputError(path, "not an axial slice: the single-slice image is sagittal or coronal")
    z_world = [float((can_affine @ np.array([0, 0, k, 1.0]))[2]) for k in range(n)]
    return CTVolume(
        hu=np.ascontiguousarray(xyz.transpose(2, 1, 0)),
        spacing_mm=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
        patient_id=_nifti_stem(path),
        source=str(path),
        affine=can_affine,
        slice_ids=[f"{_nifti_stem(path)}_z{k:03d}" for k in range(n)],
        slice_locations_mm=z_world,
        stored_transform=None,
    )


def write_nifti_labels(labels: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write labels shaped (rows, cols) or (z, rows, cols) as a uint8 NIfTI file; ``affine``
    maps (col, row, z) voxel indices to RAS mm (as ``CTImage.affine`` does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = labels[None] if labels.ndim == 2 else labels
    img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)).astype(np.uint8), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


# --------------------------------------------------------------------------------------------
# PNG


def read_png_array(path: str | Path, what: str) -> np.ndarray:
    """A single-channel PNG as an integer array; colour images are refused."""
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "file not found")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise L3SegInputError(path, f"corrupt or unreadable PNG ({exc})") from None
    if mode in ("RGB", "RGBA", "LA"):
        chans = arr[..., :3] if mode != "LA" else arr[..., :1]
        if chans.shape[-1] == 3 and not (np.array_equal(chans[..., 0], chans[..., 1]) and np.array_equal(chans[..., 0], chans[..., 2])):
            raise L3SegInputError(path, f"colour PNG ({mode}); the {what} must be a single-channel (grey) PNG")
        arr = chans[..., 0]
    elif mode not in ("L", "P", "I", "I;16", "I;16B", "1"):
        raise L3SegInputError(path, f"unsupported PNG mode {mode!r} for the {what}")
    return arr.astype(np.int64)


def read_png(
    path: str | Path,
    spacing_mm: tuple[float, float] | None,
    window_hu: tuple[float, float] | None,
    patient_id: str | None = None,
) -> CTImage:
    """Read an 8-bit windowed PNG export; HU are reconstructed as lo + v/255 * (hi - lo).

    PNG carries no geometry, so ``spacing_mm`` (row, col) and the export window must be given
    (the manifest's ``spacing_row_mm, spacing_col_mm, window_lo_hu, window_hi_hu`` columns).
    """
    path = Path(path)
    if spacing_mm is None or any(s is None or not np.isfinite(s) for s in spacing_mm):
        raise L3SegInputError(path, "PNG has no pixel spacing: give spacing_row_mm and spacing_col_mm in the manifest")
    check_pixel_spacing(spacing_mm, str(path))
    if window_hu is None or any(w is None or not np.isfinite(w) for w in window_hu):
        raise L3SegInputError(path, "PNG gray values cannot be turned into HU without the export window: "
                                    "give window_lo_hu and window_hi_hu in the manifest")
    lo, hi = float(window_hu[0]), float(window_hu[1])
    if not lo < hi:
        raise L3SegInputError(path, f"export window [{lo}, {hi}] HU is empty")
    arr = read_png_array(path, "image")
    if arr.max(initial=0) > 255:
        raise L3SegInputError(path, "expected an 8-bit PNG export (values 0-255)")
    hu = (lo + arr.astype(np.float32) / 255.0 * (hi - lo)).astype(np.float32)
    row_mm, col_mm = float(spacing_mm[0]), float(spacing_mm[1])
    affine = np.diag([-col_mm, -row_mm, 1.0, 1.0])
    return CTImage(
        hu=hu,
        spacing_mm=(row_mm, col_mm),
        patient_id=patient_id or path.stem,
        slice_id=path.stem,
        source=str(path),
        affine=affine,
        hu_calibrated=False,
        meta={"png_window_hu": [lo, hi]},
    )


# --------------------------------------------------------------------------------------------
# dispatch


def image_kind(path: str | Path) -> str:
    """``dicom_series``, ``dicom``, ``nifti`` or ``png`` for an input path."""
    path = Path(path)
    if path.is_dir():
        return "dicom_series"
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".png"):
        return "png"
    if not path.exists():
        raise L3SegInputError(path, "file not found")
    try:
        if name.endswith((".dcm", ".ima")) or pydicom.misc.is_dicom(path):
            return "dicom"
    except OSError as exc:
        raise L3SegInputError(path, f"cannot be read ({exc})") from None
    raise L3SegInputError(path, "unknown image format (expected DICOM, a DICOM series folder, NIfTI or PNG)")


def read_image(path: str | Path, check_hu: bool = True, **png_kwargs: Any) -> CTVolume:
    """Read any supported image as a :class:`CTVolume` (a single slice becomes one-slice volume)."""
    kind = image_kind(path)
    if kind == "dicom_series":
        return read_dicom_series(path, check_hu=check_hu)
    if kind == "nifti":
        return read_nifti(path, check_hu=check_hu)
    if kind == "dicom":
        return slice_as_volume(read_dicom(path, check_hu=check_hu))
    return slice_as_volume(read_png(path, **png_kwargs))


def slice_as_volume(image: CTImage) -> CTVolume:
    """Wrap one slice as a one-slice :class:`CTVolume`."""
    zooms = _zooms(image.affine)
    stored = None
    if image.stored_transform is not None:
        stored = image.stored_transform
    vol = CTVolume(
        hu=image.hu[None],
        spacing_mm=(float(zooms[2]), image.spacing_mm[0], image.spacing_mm[1]),
        patient_id=image.patient_id,
        source=image.source,
        affine=image.affine,
        slice_ids=[image.slice_id],
        slice_locations_mm=[image.slice_location_mm if image.slice_location_mm is not None else 0.0],
        stored_transform=stored,
        meta=dict(image.meta),
    )
    vol.meta["hu_calibrated"] = image.hu_calibrated
    return vol


def volume_slices(volume: CTVolume) -> list[CTImage]:
    """All slices of a volume, keeping the PNG calibration flag."""
    calibrated = volume.meta.get("hu_calibrated", True)
    return [replace(volume.slice(i), hu_calibrated=calibrated) for i in range(volume.n_slices)]
