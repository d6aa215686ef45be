"""NIfTI CT volumes and label volumes (nibabel)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.names import atomic_path
from l3seg_lib.imageio.ct import (
    DEFLATE_MAX_RATIO,
    FLOOR_LIMITS,
    LOWEST_HU,
    CTVolume,
    ReadLimits,
    canonicalize,
    check_claimed_size,
    check_pixel_spacing,
    check_plausible_hu,
    check_plausible_image,
    voxel_sizes,
)


def _nifti_stem(path: Path) -> str:
    """File name without ``.nii.gz`` or ``.nii`` (else without its last suffix)."""
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def check_nifti_header(path: Path, img, limits: ReadLimits | None = None) -> tuple[int, ...]:
    """Refuse a NIfTI whose header claims more than ``limits`` allow, or more voxel data than the
    file can hold, from the header alone (nibabel's proxy: nothing of the pixel data is read)."""
    header = img.header
    try:
        shape = tuple(int(d) for d in img.shape)
        itemsize = int(header.get_data_dtype().itemsize)
        offset = int(header.get("vox_offset", 0) or 0) if hasattr(header, "get") else 0
    except Exception as exc:  # a malformed header (dim, datatype)
        raise L3SegInputError(path, f"corrupt NIfTI header ({type(exc).__name__}: {exc})") from None
    if len(shape) < 2 or len(shape) > 4 or (len(shape) == 4 and shape[3] != 1):
        raise L3SegInputError(path, f"expected a 2-D or 3-D image, got shape {shape} (header dim)")
    nbytes = check_claimed_size(path, shape, itemsize, limits, what="the NIfTI header (dim)",
                                frames_axis=2 if len(shape) > 2 else None) * itemsize
    try:  # the file holding the voxels (a .hdr/.img pair keeps them in the .img)
        data_file = Path(img.file_map["image"].filename or path)
    except (KeyError, AttributeError, TypeError):
        data_file = path
    if data_file != path:
        return shape
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        if size * DEFLATE_MAX_RATIO < nbytes:
            raise L3SegInputError(path, f"the NIfTI header (dim {'x'.join(map(str, shape))}, {itemsize}-byte voxels) "
                                        f"claims {nbytes:,} bytes of voxel data, more than a {size:,}-byte gzip file "
                                        f"can hold")
    elif size < offset + nbytes:
        raise L3SegInputError(path, f"the NIfTI header (dim {'x'.join(map(str, shape))}, {itemsize}-byte voxels, "
                                    f"vox_offset {offset}) claims {offset + nbytes:,} bytes, but the file has "
                                    f"{size:,} (truncated?)")
    return shape


def _scaling_note(header) -> str:
    """``; header scl_slope .., scl_inter ..`` when the header scales the stored values (a NaN or
    0 scl_slope means no scaling), else nothing."""
    try:
        slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    except (KeyError, TypeError, ValueError):
        return ""
    if np.isnan(slope) or slope == 0 or (slope == 1 and (np.isnan(inter) or inter == 0)):
        return ""
    return f"; header scl_slope {slope:g}, scl_inter {inter:g}"


def load_nifti(path: str | Path, as_labels: bool = False, limits: ReadLimits | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI file as a 3-D (i, j, k) array with its affine; clear errors for bad files.
    The header is checked against ``limits`` (:func:`check_nifti_header`) before the voxels are read."""
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "file not found")
    try:
        img = nib.load(str(path))  # header only; the voxels stay behind the proxy
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors, ...
        raise L3SegInputError(path, f"corrupt or unreadable NIfTI file ({type(exc).__name__}: {exc})") from None
    check_nifti_header(path, img, limits)
    try:  # the header as stored: nibabel replaces an infinite scaling by "no scaling" when it loads
        with nib.openers.ImageOpener(str(path)) as f:
            raw = type(img.header).from_fileobj(f)
    except Exception:
        raw = img.header
    for field in ("scl_slope", "scl_inter"):
        try:
            value = float(raw[field])
        except (KeyError, TypeError, ValueError):
            continue
        if np.isinf(value):
            raise L3SegInputError(path, f"the NIfTI header's {field} is {value} (voxel = stored x scl_slope + "
                                        f"scl_inter needs finite numbers)")
    try:
        if as_labels:
            data = np.asanyarray(img.dataobj)
        else:
            data = img.get_fdata(dtype=np.float32)
        affine = np.asarray(img.affine, dtype=float)
    except L3SegInputError:
        raise
    except Exception as exc:  # truncated or corrupt voxel data
        raise L3SegInputError(path, f"corrupt or unreadable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 2:
        data = data[:, :, None]
    elif data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    elif data.ndim != 3:
        raise L3SegInputError(path, f"expected a 2-D or 3-D image, got shape {data.shape}")
    if not np.all(np.isfinite(affine)):
        raise L3SegInputError(path, "the NIfTI affine (qform/sform, pixdim) holds NaN or infinite values")
    if data.dtype.kind == "f":
        n_nan = int(np.count_nonzero(np.isnan(data)))
        n_inf = int(np.count_nonzero(np.isinf(data)))
        if n_nan or n_inf:
            parts = ([f"{n_nan:,} voxels are NaN"] if n_nan else []) + ([f"{n_inf:,} voxels are infinite"] if n_inf else [])
            what = "a label volume needs whole numbers" if as_labels else "not a CT image in HU"
            raise L3SegInputError(path, f"{' and '.join(parts)} (of {data.size:,}{_scaling_note(img.header)}): {what}")
    return data, affine


def read_nifti(path: str | Path, check_hu: bool = True, limits: ReadLimits | None = None) -> CTVolume:
    """Read a CT NIfTI volume (values in HU) into canonical orientation; the header is checked
    against ``limits`` before the voxels are read."""
    path = Path(path)
    data, affine = load_nifti(path, limits=limits)
    xyz, can_affine, transform = canonicalize(data.astype(np.float32, copy=False), affine, str(path))
    zooms = voxel_sizes(can_affine)
    check_pixel_spacing((zooms[1], zooms[0]), str(path))
    n = xyz.shape[2]
    if 1 in data.shape and n != 1:  # a single slice whose thin axis is not the body axis
        raise L3SegInputError(path, "not an axial slice: the single-slice image is sagittal or coronal")
    check_plausible_image(path, (xyz.shape[1], xyz.shape[0]), (zooms[1], zooms[0]), FLOOR_LIMITS)
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
    with atomic_path(path) as tmp:  # never a torn file under the final name
        nib.save(img, str(tmp))
    return path


