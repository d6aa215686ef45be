"""Label files and label maps: remapping to the four classes, ITK-SNAP label descriptions,
Slice-O-Matic ``.tag`` files and binary tissue masks.

Classes, tags and colours come from :mod:`l3seg_lib.tissues`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l3seg_lib.errors import L3SegInputError
from l3seg_lib.names import atomic_path
from l3seg_lib.imageio.ct import (
    CTImage,
    CTVolume,
    canonicalize,
    check_same_space,
    voxel_sizes,
)
from l3seg_lib.imageio.nifti import load_nifti
from l3seg_lib.imageio.png import read_png_array
from l3seg_lib.tissues import BACKGROUND, CLASS_NAMES, CLASSES


def check_integral(values: np.ndarray, source: str) -> np.ndarray:
    """Labels must be whole numbers; return them as int64."""
    if np.issubdtype(values.dtype, np.integer) or values.dtype == bool:
        return values.astype(np.int64)
    if not np.all(np.isfinite(values)):
        raise L3SegInputError(source, "label file contains NaN or infinite values")
    rounded = np.rint(values)
    if np.max(np.abs(values - rounded), initial=0.0) > 1e-3:
        raise L3SegInputError(source, "label file holds non-integer values; expected a label map, not a probability map")
    return rounded.astype(np.int64)


def remap_labels(labels: np.ndarray, label_map: dict[str, list[int]], source: str) -> np.ndarray:
    """Map source label values to classes 0-3 via ``label_map`` (class name -> source values).

    Values present in ``labels`` but listed under no class raise an error naming them.
    """
    labels = check_integral(np.asarray(labels), source)
    value_to_class: dict[int, int] = {}
    for cls, name in enumerate(CLASS_NAMES):
        for value in label_map.get(name, []):
            value_to_class[int(value)] = cls
    present = np.unique(labels)
    unknown = [int(v) for v in present if int(v) not in value_to_class]
    if unknown:
        known = ", ".join(f"{n}: {label_map.get(n, [])}" for n in CLASS_NAMES)
        raise L3SegInputError(
            source, f"label value(s) {unknown} are not in the class map ({known}); "
            f"add them to data.label_map"
        )
    keys = np.array(sorted(value_to_class), dtype=np.int64)
    classes = np.array([value_to_class[k] for k in keys], dtype=np.uint8)
    return classes[np.searchsorted(keys, labels)]


def combine_binary_masks(masks: dict[str, np.ndarray], sources: dict[str, str] | None = None) -> np.ndarray:
    """Combine binary tissue masks (keys ``muscle``, ``sat``, ``vat``) into one class map.

    Overlapping voxels are an error: each voxel belongs to one tissue.
    """
    sources = sources or {}
    names = [n for n in CLASS_NAMES[1:] if n in masks]
    unknown = set(masks) - set(CLASS_NAMES[1:])
    if unknown:
        raise ValueError(f"unknown tissue name(s) {sorted(unknown)}; use {', '.join(CLASS_NAMES[1:])}")
    shape = masks[names[0]].shape
    out = np.zeros(shape, dtype=np.uint8)
    for name in names:
        src = sources.get(name, name)
        m = check_integral(np.asarray(masks[name]), src)
        if m.shape != shape:
            raise L3SegInputError(src, f"shape {m.shape} differs from the {names[0]} mask {shape}")
        values = np.unique(m)
        if not set(values.tolist()) <= {0, 1}:
            raise L3SegInputError(src, f"binary mask expected (0/1), found values {values[:10].tolist()}")
        overlap = (out > 0) & (m > 0)
        if overlap.any():
            other = CLASS_NAMES[int(out[overlap][0])]
            raise L3SegInputError(src, f"{int(overlap.sum())} voxels are also marked {other}; tissue masks must not overlap")
        out[m > 0] = CLASS_NAMES.index(name)
    return out


# --------------------------------------------------------------------------------------------
# ITK-SNAP label description files


@dataclass
class LabelDescription:
    """One label of an ITK-SNAP label description file: value, name and colour (RGB)."""
    value: int
    name: str
    rgb: tuple[int, int, int]


def write_itksnap_labels(path: str | Path, labels: list[LabelDescription]) -> Path:
    """Write an ITK-SNAP label description file (``IDX R G B A VIS MSH "LABEL"`` lines)."""
    path = Path(path)
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# File format:",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "################################################",
    ]
    for lab in labels:
        r, g, b = lab.rgb
        alpha = 0 if lab.value == 0 else 1
        lines.append(f'{lab.value:5d} {r:5d} {g:4d} {b:4d} {alpha:8d} {1 if lab.value else 0:2d} {1 if lab.value else 0:2d}    "{lab.name}"')
    with atomic_path(path) as tmp:  # never a torn file under the final name
        tmp.write_text("\n".join(lines) + "\n")
    return path


def read_itksnap_labels(path: str | Path) -> list[LabelDescription]:
    """Read an ITK-SNAP label description file."""
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "file not found")
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parts = shlex.split(line)
            out.append(LabelDescription(int(parts[0]), parts[7], (int(parts[1]), int(parts[2]), int(parts[3]))))
        except (ValueError, IndexError):
            raise L3SegInputError(path, f"line {lineno} is not 'IDX R G B A VIS MSH \"LABEL\"': {line!r}") from None
    return out


# --------------------------------------------------------------------------------------------
# Slice-O-Matic .tag files


def read_tag(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a Slice-O-Matic ``.tag`` file: a text header of ``name:value`` fields ended by a
    form-feed byte (0x0C), then one uint8 tag per pixel in the DICOM's stored pixel order.

    Returns (rows, cols) for one slice or (slices, rows, cols). ``shape`` (rows, cols) is used
    when the header gives no ``x:``/``y:`` size and to check that the tag matches its image.
    """
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "file not found")
    raw = path.read_bytes()
    end = raw.find(b"\x0c", 0, 4096)
    if end < 0:
        raise L3SegInputError(path, "not a Slice-O-Matic tag file (no end-of-header form feed in the first 4 kB)")
    try:
        header_text = raw[:end].decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise L3SegInputError(path, "tag header is not text") from None
    fields: dict[str, str] = {}
    for token in re.split(r"[\s]+", header_text):
        if ":" in token:
            name, value = token.split(":", 1)
            fields[name.strip()] = value.strip()
    try:
        cols = int(fields["x"]) if "x" in fields else None
        rows = int(fields["y"]) if "y" in fields else None
        n = int(fields.get("z", "1") or 1)
    except ValueError:
        raise L3SegInputError(path, f"tag header has a non-integer size: x={fields.get('x')} y={fields.get('y')}") from None
    if cols is None or rows is None:
        if shape is None:
            raise L3SegInputError(path, "tag header gives no x:/y: size and no image size was given")
        rows, cols = shape
    if shape is not None and (rows, cols) != tuple(shape):
        raise L3SegInputError(path, f"tag size {rows}x{cols} does not match the image {shape[0]}x{shape[1]}")
    n = max(n, 1)
    data = np.frombuffer(raw, dtype=np.uint8, offset=end + 1)
    need = rows * cols * n
    if data.size < need:
        raise L3SegInputError(path, f"truncated tag file: {data.size} label bytes, expected {need} ({n} x {rows} x {cols})")
    labels = data[:need].reshape(n, rows, cols).copy()
    return labels[0] if n == 1 else labels


def write_tag(path: str | Path, tags: np.ndarray) -> Path:
    """Write a Slice-O-Matic ``.tag`` file: the ``x:``/``y:``/``z:`` header read by :func:`read_tag`,
    a form feed, then one uint8 tag per pixel of the (rows, cols) array in the DICOM's stored
    pixel order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(tags, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    header = f"x:{arr.shape[2]} y:{arr.shape[1]} z:{arr.shape[0]} written-by:l3seg\n".encode("latin-1")
    with atomic_path(path) as tmp:  # never a torn file under the final name
        tmp.write_bytes(header + b"\x0c" + np.ascontiguousarray(arr).tobytes())
    return path


CLASS_LABELS = [LabelDescription(BACKGROUND, "Clear Label", (0, 0, 0)),
                *(LabelDescription(t.label, t.name, t.rgb) for t in CLASSES)]
"""ITK-SNAP label descriptions of the four classes (names and colours of :mod:`l3seg_lib.tissues`)."""


# --------------------------------------------------------------------------------------------
# label files paired with images


def read_label_volume(path: str | Path, image: CTImage | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw label values in canonical orientation (z, rows, cols) and, for NIfTI, the canonical
    affine (None for PNG and ``.tag``, which carry no geometry).

    NIfTI is reoriented with its own affine; PNG and ``.tag`` masks are taken to be in the
    paired image's stored pixel order.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        data, affine = load_nifti(path, as_labels=True)
        data = check_integral(data, str(path))
        xyz, can_affine, _ = canonicalize(data, affine, str(path))
        return np.ascontiguousarray(xyz.transpose(2, 1, 0)), can_affine
    if name.endswith(".png"):
        arr = read_png_array(path, "mask")
    elif name.endswith(".tag"):
        shape = None
        if image is not None:
            shape = image.hu.shape
            if image.stored_transform is not None and image.stored_transform[0, 0] == 1:
                shape = shape[::-1]  # stored rows/cols were swapped by the canonical reorientation
        arr = read_tag(path, shape=shape)
    else:
        raise L3SegInputError(path, "unknown mask format (expected NIfTI, PNG or Slice-O-Matic .tag)")
    if arr.ndim == 3:
        if image is not None:
            arr = np.stack([image.stored_to_canonical(a) for a in arr])
        return arr, None
    if image is not None:
        arr = image.stored_to_canonical(arr)
    return arr[None], None


def read_label_file(path: str | Path, image: CTImage | None = None) -> np.ndarray:
    """Raw label values in canonical orientation: (z, rows, cols) (see :func:`read_label_volume`)."""
    return read_label_volume(path, image)[0]


def read_mask_for(path: str | Path, volume: CTVolume, what: str = "mask") -> np.ndarray:
    """Raw labels of a mask paired with ``volume``: same shape, and for NIfTI the same space
    (:func:`l3seg_lib.imageio.ct.check_same_space`); errors name both files."""
    raw, affine = read_label_volume(path, volume.slice(0))
    if raw.shape != volume.hu.shape:
        shown_img = volume.hu.shape if volume.n_slices > 1 else volume.hu.shape[1:]
        shown_mask = raw.shape if raw.shape[0] > 1 else raw.shape[1:]
        raise L3SegInputError(path, f"{what} shape {shown_mask} does not match image {volume.source} shape {shown_img}")
    if affine is not None:
        voxel = voxel_sizes(affine)
        if not np.allclose(voxel[[1, 0]], volume.spacing_mm[1:], rtol=0.01):
            raise L3SegInputError(
                path, f"{what} voxel size {tuple(round(float(v), 3) for v in voxel[[1, 0]])} mm differs from the image "
                f"pixel spacing {tuple(round(v, 3) for v in volume.spacing_mm[1:])} mm of {volume.source}"
            )
        check_same_space(volume.affine, volume.hu.shape, affine, volume.source, str(path))
    return raw
