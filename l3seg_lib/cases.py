"""Cases (a CT slice with its label mask) listed in a manifest CSV, and clinical variables.

Manifest columns (paths relative to the manifest's folder):

``image``            DICOM file, DICOM series folder, NIfTI or 8-bit PNG (required)
``mask``             NIfTI, PNG or Slice-O-Matic ``.tag`` label file (required for training)
``patient_id``       overrides the ID read from the image (needed for patient-wise splits)
``slice_index``      slice of a volume (canonical, inferior -> superior); blank = every
                     slice that carries labels
``spacing_row_mm``, ``spacing_col_mm``, ``window_lo_hu``, ``window_hi_hu``   PNG only
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import DataConfig
from .errors import L3SegInputError
from .io import CTImage, CTVolume, image_kind, read_image, volume_slices
from .labels import nifti_voxel_size, read_label_file, remap_labels

MANIFEST_COLUMNS = ("image", "mask", "patient_id", "slice_index", "spacing_row_mm", "spacing_col_mm",
                    "window_lo_hu", "window_hi_hu")


@dataclass
class Case:
    """One axial slice and (optionally) its class mask (0-3) of the same shape."""

    image: CTImage
    mask: np.ndarray | None
    mask_source: str | None = None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV; ``image`` and ``mask`` paths are resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "manifest not found")
    try:
        df = pd.read_csv(path, dtype={"patient_id": str, "image": str, "mask": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise L3SegInputError(path, f"not a readable CSV ({exc})") from None
    if "image" not in df.columns:
        raise L3SegInputError(path, f"manifest needs an 'image' column; found {list(df.columns)}")
    if df.empty:
        raise L3SegInputError(path, "manifest lists no cases")
    base = path.parent
    for col in ("image", "mask"):
        if col in df.columns:
            df[col] = [None if _blank(v) else str((base / str(v)).resolve()) if not Path(str(v)).is_absolute() else str(v)
                       for v in df[col]]
    return df


def _row_value(row: pd.Series, key: str) -> Any:
    value = row.get(key)
    return None if _blank(value) else value


def load_row(row: pd.Series, data: DataConfig, require_mask: bool = True) -> list[Case]:
    """Load the case(s) one manifest row describes (several for a volume without slice_index)."""
    image_path = row["image"]
    kind = image_kind(image_path)
    png_kwargs: dict[str, Any] = {}
    if kind == "png":
        def num(key: str) -> float | None:
            v = _row_value(row, key)
            return None if v is None else float(v)
        png_kwargs = {
            "spacing_mm": (num("spacing_row_mm"), num("spacing_col_mm")),
            "window_hu": (num("window_lo_hu"), num("window_hi_hu")),
            "patient_id": _row_value(row, "patient_id"),
        }
    volume = read_image(image_path, check_hu=data.check_hu and kind != "png", **png_kwargs)
    patient_id = _row_value(row, "patient_id")
    if patient_id is not None:
        volume.patient_id = str(patient_id)
    slices = volume_slices(volume)
    mask_path = _row_value(row, "mask")
    if mask_path is None and require_mask:
        raise L3SegInputError(image_path, "no mask given in the manifest (the 'mask' column is empty)")

    masks: np.ndarray | None = None
    if mask_path is not None:
        raw = read_label_file(mask_path, slices[0])
        if raw.shape != volume.hu.shape:
            shown_img = volume.hu.shape if volume.n_slices > 1 else volume.hu.shape[1:]
            shown_mask = raw.shape if raw.shape[0] > 1 else raw.shape[1:]
            raise L3SegInputError(mask_path, f"mask shape {shown_mask} does not match image {image_path} shape {shown_img}")
        voxel = nifti_voxel_size(mask_path)
        if voxel is not None and not np.allclose(voxel, volume.spacing_mm[1:], rtol=0.01):
            raise L3SegInputError(
                mask_path, f"mask voxel size {tuple(round(v, 3) for v in voxel)} mm differs from the image "
                f"pixel spacing {tuple(round(v, 3) for v in volume.spacing_mm[1:])} mm of {image_path}"
            )
        masks = remap_labels(raw, data.label_map, str(mask_path))

    index = _row_value(row, "slice_index")
    if index is not None:
        try:
            indices = [int(float(index))]
        except ValueError:
            raise L3SegInputError(image_path, f"slice_index {index!r} is not an integer") from None
        for i in indices:
            if not 0 <= i < volume.n_slices:
                raise L3SegInputError(image_path, f"slice_index {i} is outside 0..{volume.n_slices - 1}")
    elif volume.n_slices == 1:
        indices = [0]
    elif masks is not None:
        indices = [int(i) for i in np.flatnonzero(masks.reshape(masks.shape[0], -1).any(axis=1))]
        if not indices:
            raise L3SegInputError(mask_path, "the mask volume has no labelled slice")
    else:
        raise L3SegInputError(image_path, f"volume with {volume.n_slices} slices: give slice_index in the manifest")
    return [Case(slices[i], None if masks is None else masks[i], None if mask_path is None else str(mask_path))
            for i in indices]


def iter_manifest(manifest: pd.DataFrame, data: DataConfig, require_mask: bool = True) -> Iterator[Case]:
    for _, row in manifest.iterrows():
        yield from load_row(row, data, require_mask=require_mask)


def volume_case(volume: CTVolume, index: int) -> Case:
    return Case(volume.slice(index), None)


# --------------------------------------------------------------------------------------------
# clinical variables

_SEX = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}


def read_clinical(path: str | Path) -> pd.DataFrame:
    """Read clinical variables, one row per patient, indexed by ``patient_id``.

    Recognised columns: ``sex`` (M/F), ``age`` (years), ``height_m`` or ``height_cm``,
    ``weight_kg``, ``bmi`` (kg/m2; computed from height and weight when absent).
    Implausible values are errors naming the file, row and column.
    """
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "clinical CSV not found")
    try:
        df = pd.read_csv(path, dtype={"patient_id": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise L3SegInputError(path, f"not a readable CSV ({exc})") from None
    if "patient_id" not in df.columns:
        raise L3SegInputError(path, "clinical CSV needs a 'patient_id' column")
    if df["patient_id"].duplicated().any():
        dup = df.loc[df["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise L3SegInputError(path, f"patient_id {dup!r} appears more than once")
    out = pd.DataFrame(index=df["patient_id"].astype(str))
    out.index.name = "patient_id"
    if "sex" in df.columns:
        sexes = []
        for i, v in enumerate(df["sex"]):
            if _blank(v):
                sexes.append(None)
                continue
            s = _SEX.get(str(v).strip().lower())
            if s is None:
                raise L3SegInputError(path, f"row {i + 2}: sex {v!r} is not M/F (male/female)")
            sexes.append(s)
        out["sex"] = sexes
    if "height_m" in df.columns:
        out["height_m"] = pd.to_numeric(df["height_m"], errors="coerce").to_numpy()
    elif "height_cm" in df.columns:
        out["height_m"] = pd.to_numeric(df["height_cm"], errors="coerce").to_numpy() / 100.0
    for col in ("weight_kg", "bmi", "age"):
        if col in df.columns:
            out[col] = pd.to_numeric(df[col], errors="coerce").to_numpy()
    ranges = {"height_m": (1.0, 2.5), "weight_kg": (20.0, 400.0), "bmi": (10.0, 100.0), "age": (0.0, 120.0)}
    for col, (lo, hi) in ranges.items():
        if col in out.columns:
            vals = out[col].to_numpy(dtype=float)
            bad = np.flatnonzero(np.isfinite(vals) & ((vals < lo) | (vals > hi)))
            if bad.size:
                raise L3SegInputError(path, f"row {bad[0] + 2}: {col} = {vals[bad[0]]} is outside {lo}-{hi}"
                                            + (" (height in cm? use a height_cm column)" if col == "height_m" else ""))
    if "bmi" not in out.columns:
        out["bmi"] = np.nan
    if "height_m" in out.columns and "weight_kg" in out.columns:
        computed = out["weight_kg"] / out["height_m"] ** 2
        out["bmi"] = out["bmi"].fillna(computed)
    return out


def clinical_for(patient_id: str, clinical: pd.DataFrame | None, image_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Clinical variables of one patient: the CSV first, then DICOM PatientSex/Size/Weight/Age.

    Missing values stay ``None`` (never guessed). BMI is computed from height and weight.
    """
    meta = image_meta or {}
    row: dict[str, Any] = {}
    if clinical is not None and patient_id in clinical.index:
        row = {k: (None if _blank(v) else v) for k, v in clinical.loc[patient_id].to_dict().items()}
    out: dict[str, Any] = {}
    for key in ("sex", "age", "height_m", "weight_kg", "bmi"):
        value = row.get(key)
        if value is None:
            value = meta.get(key)
        out[key] = None if _blank(value) else value
    if out["bmi"] is None and out["height_m"] and out["weight_kg"]:
        out["bmi"] = float(out["weight_kg"]) / float(out["height_m"]) ** 2
    for key in ("age", "height_m", "weight_kg", "bmi"):
        if out[key] is not None:
            out[key] = float(out[key])
    return out
