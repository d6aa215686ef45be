"""NIfTI CT volumes and label volumes (nibabel)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import (
    LOWEST_HU,
    CTVolume,
    canonicalize,
    check_pixel_spacing,
    check_plausible_hu,
    voxel_sizes,
)


def _nifti_stem(path: Path) -> str:
    """File name without ``.nii.gz`` or ``.nii`` (else without its last suffix)."""
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
    xyz, can_affine, transform = canonicalize(data.astype(np.float32), affine, str(path))
    zooms = voxel_sizes(can_affine)
    check_pixel_spacing((zooms[1], zooms[0]), str(path))
    n = xyz.shape[2]
    if 1 in data.shape and n != 1:  # a single slice whose thin axis is not the body axis
        raise L3SegInputError(path, "not an axial slice: the single-slice image is sagittal or coronal")
    if check_hu:
        check_plausible_hu(xyz, str(path))
    xyz = np.maximum(xyz, LOWEST_HU)
    z_world = [float((can_affine @ np.array([0, 0, k, 1.0]))[2]) for k in range(n)]
    return CTVolume(
        hu=np.ascontiguousarray(xyz.transpose(2, 1, 0)),
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


