"""CT images in one canonical orientation: the image classes, their typed metadata, orientation
and plausibility checks.

Readers (:mod:`.dicom`, :mod:`.nifti`, :mod:`.png`, one entry point in :mod:`.reader`) return
every image in one canonical orientation, whatever its source:
arrays are indexed ``[z, row, col]`` (or ``[row, col]`` for one slice) with rows running
anterior -> posterior, columns patient right -> left (the radiological view) and z inferior ->
superior. Pixel spacing is ``(row_mm, col_mm)``: the distance between rows, then between columns.
Values are HU, from RescaleSlope/RescaleIntercept (DICOM) or the stored scaling (NIfTI).

As in TorchIO's and MONAI's images, the geometry lives in one place, the affine: ``spacing_mm``
is derived from it (a spacing given to the constructor must agree with it). What else is known of
an image travels in :class:`ImageMeta` (source files, the DICOM headers kept in memory, the
acquisition fields, series notes, skipped files, HU calibration), kept by :meth:`CTVolume.slice`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nibabel import orientations as nio

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.units import pixel_area_cm2

CANONICAL_AXCODES = ("L", "P", "S")
"""World directions of the canonical (col, row, z) array axes."""
MAX_AXIAL_TILT_DEG = 30.0
"""Largest angle between a slice normal and the body axis still accepted as axial (gantry tilt)."""
AIR_HU = -1000.0
LOWEST_HU = -1024.0


# --------------------------------------------------------------------------------------------
# typed metadata


@dataclass
class Acquisition:
    """Patient and acquisition attributes as written in the DICOM file (strings, ``None`` when
    absent; interpreted, with plausibility rules, by :mod:`l3seg_lib.data.clinical` and the
    review flags)."""

    patient_sex: str | None = None
    patient_age: str | None = None
    patient_size: str | None = None
    patient_weight: str | None = None
    study_date: str | None = None
    series_description: str | None = None
    series_number: str | None = None
    kvp: str | None = None
    convolution_kernel: str | None = None
    manufacturer: str | None = None
    slice_thickness: str | None = None
    contrast_agent: str | None = None
    contrast_route: str | None = None
    image_type: str | None = None


ACQUISITION_KEYWORDS = {"PatientSex": "patient_sex", "PatientAge": "patient_age", "PatientSize": "patient_size",
                        "PatientWeight": "patient_weight", "StudyDate": "study_date",
                        "SeriesDescription": "series_description", "SeriesNumber": "series_number", "KVP": "kvp",
                        "ConvolutionKernel": "convolution_kernel", "Manufacturer": "manufacturer",
                        "SliceThickness": "slice_thickness", "ContrastBolusAgent": "contrast_agent",
                        "ContrastBolusRoute": "contrast_route", "ImageType": "image_type"}
"""DICOM keyword -> :class:`Acquisition` field."""


def acquisition_from_keywords(values: Mapping[str, str]) -> Acquisition:
    """An :class:`Acquisition` from values named by their DICOM keywords (:data:`ACQUISITION_KEYWORDS`)."""
    unknown = set(values) - set(ACQUISITION_KEYWORDS)
    if unknown:
        raise KeyError(f"not acquisition keywords: {sorted(unknown)}")
    return Acquisition(**{ACQUISITION_KEYWORDS[k]: v for k, v in values.items()})


@dataclass
class ImageMeta:
    """What is known of an image besides its pixels and geometry, read by attribute (the DICOM
    acquisition fields under :attr:`acquisition`)."""

    source_files: list[str] | None = None
    """Per slice, the single-frame DICOM file it came from (``""`` for a frame of a multi-frame file)."""
    datasets: list[Any] | None = field(default=None, repr=False, compare=False)
    """Per slice, its DICOM header as read (pixel data dropped; None for a frame of a
    multi-frame file): the source of DICOM SEG/SR, without reading the file again."""
    acquisition: Acquisition = field(default_factory=Acquisition)
    series_uid: str | None = None
    series_notes: list[str] | None = None
    """Duplicate positions, uneven spacing, tilt (series only)."""
    skipped: list[dict[str, str]] | None = None
    """Files of a series folder left out, with the reason (series only)."""
    hu_calibrated: bool = True
    """False when HU were reconstructed from an 8-bit windowed PNG (values outside the export
    window are clipped to its edges)."""
    png_window_hu: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else (e.g. ``variant`` of the localiser's validation volumes)."""

    def copy(self, index: int | None = None) -> ImageMeta:
        """A copy (lists copied); with ``index``, the per-slice lists narrowed to that slice."""
        new = dataclasses.replace(self, acquisition=dataclasses.replace(self.acquisition), extra=dict(self.extra))
        for name in ("source_files", "datasets", "series_notes", "skipped"):
            value = getattr(self, name)
            if value is not None:
                setattr(new, name, list(value))
        if index is not None:
            for name in ("source_files", "datasets"):
                value = getattr(self, name)
                if value is not None:
                    setattr(new, name, [value[index]] if index < len(value) else [])
        return new

    def file_of(self, index: int) -> str:
        """The single-frame DICOM file of slice ``index`` (``""`` when there is none)."""
        files = self.source_files or []
        return files[index] if index < len(files) else ""

    def dataset_of(self, index: int) -> Any:
        """The DICOM header of slice ``index`` kept in memory (None when there is none)."""
        datasets = self.datasets or []
        return datasets[index] if index < len(datasets) else None


def spacing_from_affine(affine: np.ndarray, n_axes: int) -> tuple[float, ...]:
    """Voxel size (mm) of the canonical (col, row, z) affine in array order: (z, row, col) for a
    volume (``n_axes=3``), (row, col) for a slice."""
    zooms = voxel_sizes(affine)
    return (float(zooms[2]), float(zooms[1]), float(zooms[0]))[3 - n_axes:]


def _geometry(affine: np.ndarray | None, spacing: tuple[float, ...] | None, n_axes: int, source: str) -> np.ndarray:
    """The affine of an image: the given one (a given spacing must agree with it), or, without one,
    an axis-aligned canonical affine from the spacing."""
    if affine is None:
        s = tuple(float(v) for v in (spacing or (1.0,) * n_axes))
        dz, dr, dc = s if n_axes == 3 else (1.0, *s)
        return np.diag([-dc, -dr, dz, 1.0])
    affine = np.asarray(affine, dtype=float)
    if spacing is not None:
        derived = spacing_from_affine(affine, n_axes)
        if not np.allclose(np.asarray(spacing, float), derived, rtol=1e-4, atol=1e-6):
            raise ValueError(f"{source}: spacing {tuple(spacing)} mm disagrees with the affine's {derived} mm")
    return affine


@dataclass(init=False)
class CTImage:
    """One axial CT slice.

    ``hu`` is float32 HU with shape (rows, cols) in canonical orientation; ``affine`` maps
    (col, row, 0) indices to RAS mm; :attr:`spacing_mm` (row spacing, column spacing, mm) is derived
    from it: a spacing given to the constructor builds an axis-aligned affine when none is given,
    and must agree with a given one. ``hu_calibrated`` lives in :attr:`meta` (given here, it is
    stored there).
    """

    hu: np.ndarray
    patient_id: str
    slice_id: str
    source: str
    affine: np.ndarray
    slice_location_mm: float | None
    stored_transform: np.ndarray | None
    """nibabel orientation transform from the file's stored pixel order to canonical order;
    used to bring masks stored in the same pixel order (PNG, Slice-O-Matic .tag) into line."""
    meta: ImageMeta

    def __init__(self, hu: np.ndarray, spacing_mm: tuple[float, float] | None = None, patient_id: str = "",
                 slice_id: str = "", source: str = "", affine: np.ndarray | None = None,
                 slice_location_mm: float | None = None, hu_calibrated: bool | None = None,
                 stored_transform: np.ndarray | None = None, meta: ImageMeta | None = None):
        """A slice of ``hu`` with the geometry of ``affine`` (or, without one, of ``spacing_mm``);
        ``meta`` is copied, ``hu_calibrated`` (when given) stored in the copy."""
        self.hu, self.patient_id, self.slice_id, self.source = hu, patient_id, slice_id, source
        self.affine = _geometry(affine, spacing_mm, 2, source)
        self.slice_location_mm, self.stored_transform = slice_location_mm, stored_transform
        self.meta = _own_meta(meta, source)
        if hu_calibrated is not None:
            self.meta.hu_calibrated = bool(hu_calibrated)

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """(row, col) spacing in mm, from the affine."""
        return spacing_from_affine(self.affine, 2)  # type: ignore[return-value]

    @property
    def hu_calibrated(self) -> bool:
        """False when HU were reconstructed from an 8-bit windowed PNG (kept in :attr:`meta`)."""
        return self.meta.hu_calibrated

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the slice in pixels."""
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def pixel_area_cm2(self) -> float:
        """Area of one pixel in cm² (row spacing × column spacing in mm / 100)."""
        return pixel_area_cm2(self.spacing_mm)

    def stored_to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Reorient a 2-D array given in this file's stored pixel order (rows, cols)."""
        if self.stored_transform is None:
            return array
        xyz = array.T[:, :, None]
        out = nio.apply_orientation(xyz, self.stored_transform)
        return np.ascontiguousarray(out[:, :, 0].T)

    def canonical_to_stored(self, array: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`stored_to_canonical`: a canonical 2-D array in the file's pixel order."""
        if self.stored_transform is None:
            return array
        out = nio.apply_orientation(array.T[:, :, None], invert_orientation(self.stored_transform))
        return np.ascontiguousarray(out[:, :, 0].T)


def _own_meta(meta: ImageMeta | None, source: str) -> ImageMeta:
    """An image's own copy of ``meta`` (a new one when None); TypeError for anything else."""
    if meta is None:
        return ImageMeta()
    if not isinstance(meta, ImageMeta):
        raise TypeError(f"{source}: meta must be an ImageMeta, not {type(meta).__name__}")
    return meta.copy()


def invert_orientation(transform: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform that undoes ``transform``."""
    inverse = np.empty_like(transform)
    for axis, (new_axis, flip) in enumerate(transform):
        inverse[int(new_axis)] = (axis, flip)
    return inverse


@dataclass(init=False)
class CTVolume:
    """A stack of axial CT slices, ``hu`` shaped (z, rows, cols) in canonical orientation;
    ``affine`` maps canonical (col, row, z) indices to RAS mm and :attr:`spacing_mm` ((z, row, col)
    mm) is derived from it (a spacing given to the constructor builds the affine when none is
    given, and must agree with a given one)."""

    hu: np.ndarray
    patient_id: str
    source: str
    affine: np.ndarray
    slice_ids: list[str]
    slice_locations_mm: list[float]
    stored_transform: np.ndarray | None
    meta: ImageMeta

    def __init__(self, hu: np.ndarray, spacing_mm: tuple[float, float, float] | None = None, patient_id: str = "",
                 source: str = "", affine: np.ndarray | None = None, slice_ids: list[str] | None = None,
                 slice_locations_mm: list[float] | None = None, stored_transform: np.ndarray | None = None,
                 meta: ImageMeta | None = None):
        """A volume of ``hu`` with the geometry of ``affine`` (or, without one, of ``spacing_mm``);
        ``meta`` is copied."""
        self.hu, self.patient_id, self.source = hu, patient_id, source
        self.affine = _geometry(affine, spacing_mm, 3, source)
        self.slice_ids = [] if slice_ids is None else slice_ids
        self.slice_locations_mm = [] if slice_locations_mm is None else slice_locations_mm
        self.stored_transform = stored_transform
        self.meta = _own_meta(meta, source)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """(z, row, col) spacing in mm, from the affine."""
        return spacing_from_affine(self.affine, 3)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        """Number of axial slices (z)."""
        return int(self.hu.shape[0])

    def slice(self, index: int) -> CTImage:
        """Slice ``index`` (canonical order, inferior -> superior) as a :class:`CTImage`, with its
        metadata (calibration included; source file and header narrowed to that slice)."""
        if not 0 <= index < self.n_slices:
            raise L3SegInputError(self.source, f"slice index {index} is outside 0..{self.n_slices - 1}")
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ np.array([0.0, 0.0, index]) + self.affine[:3, 3]
        stored_2d = None
        if self.stored_transform is not None:
            stored_2d = self.stored_transform.copy()
        return CTImage(
            hu=self.hu[index],
            patient_id=self.patient_id,
            slice_id=self.slice_ids[index],
            source=self.source,
            affine=affine,
            slice_location_mm=self.slice_locations_mm[index],
            stored_transform=stored_2d,
            meta=self.meta.copy(index),
        )



# --------------------------------------------------------------------------------------------
# orientation


def canonicalize(xyz: np.ndarray, affine: np.ndarray, source: str, contiguous: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorient a (i, j, k) array with its voxel->RAS ``affine`` to canonical (col, row, z).

    Returns the reoriented array (a view when ``contiguous`` is false), its affine and the
    orientation transform applied.
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
    return (np.ascontiguousarray(out) if contiguous else out), new_affine, transform


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each array axis of ``affine``."""
    return np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def check_pixel_spacing(spacing: tuple[float, ...], source: str) -> None:
    """Refuse pixel spacings that cannot be right for a clinical CT (0.05-10 mm)."""
    for s in spacing:
        if not np.isfinite(s) or not 0.05 <= s <= 10.0:
            raise L3SegInputError(
                source, f"pixel spacing {tuple(round(float(x), 4) for x in spacing)} mm is not plausible "
                f"for CT (expected 0.05-10 mm per pixel)"
            )


def check_same_space(image_affine: np.ndarray, image_shape: tuple[int, ...], other_affine: np.ndarray,
                     image_source: str, other_source: str) -> None:
    """Refuse a mask (or label volume) whose grid does not lie on the image's grid.

    Both affines map canonical (col, row, z) indices to RAS mm; ``image_shape`` is the image's
    (z, rows, cols). The corners of the grid, mapped by either affine, must agree within half a
    voxel (so origin, direction and spacing all match), as TorchIO's
    ``Subject.check_consistent_space`` demands of the images of one subject.
    """
    nz, nr, nc = image_shape
    zooms = voxel_sizes(image_affine)
    tol = 0.5 * float(min(zooms[:2]) if nz == 1 else min(zooms))
    corners = np.array([[i, j, k, 1.0] for i in (0, nc - 1) for j in (0, nr - 1) for k in (0, nz - 1)]).T
    a, b = image_affine @ corners, other_affine @ corners
    dist = float(np.max(np.linalg.norm(a[:3] - b[:3], axis=0)))
    if dist > tol:
        def fmt(v):
            """A coordinate vector as text, 1 decimal per component."""
            return "(" + ", ".join(f"{x:.1f}" for x in v) + ")"
        raise L3SegInputError(
            other_source,
            f"does not lie in the same space as the image {image_source}: its grid is up to {dist:.1f} mm away "
            f"(allowed: half a voxel, {tol:.2f} mm). Origin {fmt(other_affine[:3, 3])} vs {fmt(image_affine[:3, 3])} mm, "
            f"voxel size {fmt(voxel_sizes(other_affine))} vs {fmt(zooms)} mm (RAS). Save the mask with the image's "
            f"geometry (e.g. from ITK-SNAP or 3D Slicer with the image loaded)."
        )


SOFT_TISSUE_RANGE_HU = (-200.0, 250.0)
"""Where fat and soft tissue lie; most of a body at L3 is in this range."""


def check_plausible_hu(hu: np.ndarray, source: str, ignore: np.ndarray | None = None,
                       cause_hint: str | None = None) -> None:
    """Refuse arrays that are not plausibly HU.

    Padding (``ignore``: PixelPaddingValue pixels outside the reconstruction circle) and values
    below -1024 HU are left out first; then an L3 slice must show air near -1000 HU (the lowest
    0.5 % of pixels below -700 HU) and a body whose pixels lie mostly in the fat and soft-tissue
    range (at least 30 % of pixels above -500 HU within -200..250 HU). ``cause_hint`` names the
    likely cause in the message (e.g. the file's RescaleIntercept).
    """
    keep = np.isfinite(hu)
    if ignore is not None:
        keep &= ~ignore
    values = hu[keep]
    values = values[values >= LOWEST_HU]
    if values.size == 0:
        raise L3SegInputError(source, "the image contains no pixel values other than padding")
    problems = []
    low = float(np.percentile(values, 0.5))
    if low > -700.0:
        problems.append(f"the lowest 0.5% of pixels (padding left out) are at {low:.0f}, but a CT slice at L3 "
                        f"contains air near -1000 HU")
    body = values[values > -500.0]
    lo, hi = SOFT_TISSUE_RANGE_HU
    soft = float(np.mean((body >= lo) & (body <= hi))) if body.size else 0.0
    if soft < 0.3:
        problems.append(f"only {soft:.0%} of the body pixels lie in the fat and soft-tissue range "
                        f"{lo:.0f}..{hi:.0f} HU")
    if problems:
        raise L3SegInputError(
            source,
            "values do not look like HU: " + "; ".join(problems) + ". "
            + (cause_hint or "Missing or wrong RescaleIntercept? Raw stored values?")
            + " Set data.check_hu: false (--no-hu-check) only if the field of view truly contains no air.",
        )


# --------------------------------------------------------------------------------------------
# one slice as a volume


def slice_as_volume(image: CTImage) -> CTVolume:
    """Wrap one slice as a one-slice :class:`CTVolume` (its metadata, calibration included)."""
    return CTVolume(
        hu=image.hu[None],
        patient_id=image.patient_id,
        source=image.source,
        affine=image.affine,
        slice_ids=[image.slice_id],
        slice_locations_mm=[image.slice_location_mm if image.slice_location_mm is not None else 0.0],
        stored_transform=image.stored_transform,
        meta=image.meta.copy(),
    )


def volume_slices(volume: CTVolume) -> list[CTImage]:
    """All slices of a volume (each keeps the volume's metadata, calibration included)."""
    return [volume.slice(i) for i in range(volume.n_slices)]


# --------------------------------------------------------------------------------------------
# resource limits from headers, and the smallest plausible image
#
# A header can claim any size: a 352-byte NIfTI header saying 30000x30000x3 voxels, a DICOM
# header saying 65535x65535 pixels in 10000 frames. The readers check what a header claims
# against ReadLimits before they allocate anything (NIfTI through nibabel's header and proxy,
# DICOM from the header parsed with the pixel data deferred, PNG from Pillow's size before
# decoding), and that the file is large enough to hold what it claims. Each refusal is an
# L3SegInputError naming the file and the attribute.

DEFLATE_MAX_RATIO = 1032
"""The most deflate (gzip) can compress: a .nii.gz of n bytes holds at most about n * 1032 bytes."""


@dataclass(frozen=True)
class ReadLimits:
    """Limits on what an image header may claim, and the smallest plausible CT slice."""

    max_voxels: int = 2**28
    """Voxels of one image (all slices or frames): 2**28 is 1 GiB as float32 HU."""
    max_bytes: int = 2**31
    """Bytes of stored pixel data an image header may claim (2 GiB)."""
    max_frames: int = 4096
    """Slices of a volume or frames of an enhanced DICOM file."""
    max_matrix: int = 8192
    """Rows or columns of one slice."""
    min_matrix: int = 64
    """Rows and columns a CT slice must have at least (a 1x1 or 16x16 'CT' cannot be measured)."""
    min_fov_mm: float = 150.0
    """Field of view (rows x row spacing and columns x column spacing) a slice must cover at least:
    an abdomen at L3 is some 250-400 mm across."""


DEFAULT_LIMITS = ReadLimits()
FLOOR_LIMITS = ReadLimits(min_matrix=8, min_fov_mm=10.0)
"""What every CT image read must reach, whatever is asked (a 1x1 or 4x4 'CT' is never measured;
checked by the DICOM and NIfTI readers before the HU check, by ``read_image`` for every kind);
the plausible minimum of :data:`DEFAULT_LIMITS` (64 px, 150 mm) is applied when the caller asks
(``read_image(check_size=True)``), as ``l3seg measure`` and ``l3seg predict`` do before anything is
measured (``MeasureOptions.min_matrix``/``min_fov_mm``, ``--min-matrix``/``--min-fov-mm``)."""


def check_claimed_size(source: str | Path, shape: tuple[int, ...], itemsize: int, limits: ReadLimits | None = None,
                       what: str = "the header", frames_axis: int | None = None) -> int:
    """Refuse a header whose claimed ``shape`` (of items of ``itemsize`` bytes) exceeds ``limits``;
    the number of voxels. ``what`` names the attribute(s) in the message."""
    limits = limits or DEFAULT_LIMITS
    dims = [int(d) for d in shape]
    if any(d < 1 for d in dims):
        raise L3SegInputError(source, f"{what} claims an empty image ({'x'.join(map(str, dims))})")
    voxels = math.prod(dims)
    nbytes = voxels * max(int(itemsize), 1)
    text = "x".join(map(str, dims))
    if frames_axis is not None and dims[frames_axis] > limits.max_frames:
        raise L3SegInputError(source, f"{what} claims {dims[frames_axis]} slices/frames ({text}); "
                                      f"the limit is {limits.max_frames}")
    big = [d for i, d in enumerate(dims) if i != frames_axis and d > limits.max_matrix]
    if big:
        raise L3SegInputError(source, f"{what} claims a {text} matrix; the limit is {limits.max_matrix} "
                                      f"rows or columns per slice")
    if voxels > limits.max_voxels:
        raise L3SegInputError(source, f"{what} claims {text} = {voxels:,} voxels; the limit is "
                                      f"{limits.max_voxels:,} (refused before reading the pixel data)")
    if nbytes > limits.max_bytes:
        raise L3SegInputError(source, f"{what} claims {nbytes:,} bytes of pixel data ({text}); "
                                      f"the limit is {limits.max_bytes:,}")
    return voxels


def check_plausible_image(source: str | Path, shape: tuple[int, int], spacing_mm: tuple[float, float],
                          limits: ReadLimits | None = None) -> None:
    """Refuse a slice too small to be an axial CT at L3: its matrix ``shape`` (rows, cols) below
    :attr:`ReadLimits.min_matrix` or its field of view (rows x row spacing, cols x column spacing)
    below :attr:`ReadLimits.min_fov_mm`."""
    limits = limits or DEFAULT_LIMITS
    rows, cols = int(shape[0]), int(shape[1])
    if rows < limits.min_matrix or cols < limits.min_matrix:
        raise L3SegInputError(source, f"the image matrix is {rows}x{cols} pixels (Rows x Columns); a CT slice "
                                      f"needs at least {limits.min_matrix}x{limits.min_matrix}")
    fov = (rows * float(spacing_mm[0]), cols * float(spacing_mm[1]))
    if not all(math.isfinite(f) for f in fov) or min(fov) < limits.min_fov_mm:
        raise L3SegInputError(
            source, f"the field of view is {fov[0]:.0f} x {fov[1]:.0f} mm (matrix {rows}x{cols} x pixel spacing "
            f"{float(spacing_mm[0]):g} x {float(spacing_mm[1]):g} mm); an abdominal CT slice at L3 needs at "
            f"least {limits.min_fov_mm:g} mm")


def header_int(ds: Any, keyword: str, source: str | Path, default: int | None = None) -> int:
    """An integer header attribute (DICOM ``Rows``, ``NumberOfFrames``, ...), refused naming it when
    it is malformed; ``default`` when it is absent or empty."""
    value = ds.get(keyword) if hasattr(ds, "get") else None
    if value is None or value == "":
        if default is None:
            raise L3SegInputError(source, f"missing {keyword}")
        return default
    try:
        number = float(value)
        if not math.isfinite(number) or number != int(number):
            raise ValueError
        return int(number)
    except (TypeError, ValueError, OverflowError):
        raise L3SegInputError(source, f"{keyword} {value!r} is not a whole number") from None
