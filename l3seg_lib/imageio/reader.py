"""One entry point for every supported image: DICOM file or series folder, NIfTI, PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import CTVolume, slice_as_volume
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


def read_image(path: str | Path, check_hu: bool = True, **png_kwargs: Any) -> CTVolume:
    """Read any supported image as a :class:`CTVolume` (a single slice becomes a one-slice volume;
    an enhanced multi-frame CT file a volume)."""
    kind = image_kind(path)
    if kind == "dicom_series":
        return read_dicom_series(path, check_hu=check_hu)
    if kind == "nifti":
        return read_nifti(path, check_hu=check_hu)
    if kind == "dicom":  # read once, single-frame or multi-frame
        return read_dicom_file(path, check_hu=check_hu)
    return slice_as_volume(read_png(path, **png_kwargs))
