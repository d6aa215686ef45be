"""One entry point for every supported image: DICOM file or series folder, NIfTI, PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import FLOOR_LIMITS, CTVolume, ReadLimits, check_plausible_image, slice_as_volume
from l3seg_lib.imageio.dicom import read_dicom_file, read_dicom_series
from l3seg_lib.imageio.nifti import read_nifti
from l3seg_lib.imageio.png import read_png


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


def read_image(path: str | Path, check_hu: bool = True, limits: ReadLimits | None = None,
               check_size: bool = False, **png_kwargs: Any) -> CTVolume:
    """Read any supported image as a :class:`CTVolume` (a single slice becomes a one-slice volume;
    an enhanced multi-frame CT file a volume).

    What a header claims is checked against ``limits`` (:class:`~.ct.ReadLimits`) before
    the pixel data is read. A slice smaller than any CT (:data:`~.ct.FLOOR_LIMITS`: 8x8
    pixels, 10 mm) is always refused; with ``check_size``, one smaller than a plausible CT at L3
    (``limits.min_matrix``, ``limits.min_fov_mm``: 64 pixels, 150 mm by default,
    :func:`~.ct.check_plausible_image`), before anything is measured.
    """
    kind = image_kind(path)
    if kind == "dicom_series":
        volume = read_dicom_series(path, check_hu=check_hu, limits=limits)
    elif kind == "nifti":
        volume = read_nifti(path, check_hu=check_hu, limits=limits)
    elif kind == "dicom":  # read once, single-frame or multi-frame
        volume = read_dicom_file(path, check_hu=check_hu, limits=limits)
    else:
        volume = slice_as_volume(read_png(path, limits=limits, **png_kwargs))
    check_plausible_image(volume.source, volume.hu.shape[1:], volume.spacing_mm[1:],
                          limits if check_size else FLOOR_LIMITS)
    return volume
