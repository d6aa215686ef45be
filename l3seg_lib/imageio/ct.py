"""CT images in one canonical orientation: the image classes, orientation and plausibility checks.

Readers (:mod:`.dicom`, :mod:`.nifti`, :mod:`.png`, one entry point in :mod:`.reader`) return
every image in one canonical orientation, whatever its source:
arrays are indexed ``[z, row, col]`` (or ``[row, col]`` for one slice) with rows running
anterior -> posterior, columns patient right -> left (the radiological view) and z inferior ->
superior. Pixel spacing is ``(row_mm, col_mm)``: the distance between rows, then between columns.
Values are HU, from RescaleSlope/RescaleIntercept (DICOM) or the stored scaling (NIfTI).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from nibabel import orientations as nio

from l3seg_lib.errors import L3SegInputError

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

    def canonical_to_stored(self, array: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`stored_to_canonical`: a canonical 2-D array in the file's pixel order."""
        if self.stored_transform is None:
            return array
        out = nio.apply_orientation(array.T[:, :, None], invert_orientation(self.stored_transform))
        return np.ascontiguousarray(out[:, :, 0].T)


def invert_orientation(transform: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform that undoes ``transform``."""
    inverse = np.empty_like(transform)
    for axis, (new_axis, flip) in enumerate(transform):
        inverse[int(new_axis)] = (axis, flip)
    return inverse


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
    """Wrap one slice as a one-slice :class:`CTVolume`."""
    zooms = voxel_sizes(image.affine)
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
