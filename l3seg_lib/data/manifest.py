"""The manifest: one CSV listing the inputs, read and validated in one place.

Columns (paths relative to the manifest's folder):

``image``            DICOM file, DICOM series folder, NIfTI or 8-bit PNG (required)
``mask``             NIfTI, PNG or Slice-O-Matic ``.tag`` label file (required for training)
``patient_id``       overrides the ID read from the image (needed for patient-wise splits)
``slice_index``      slice of a volume (canonical, inferior -> superior); blank = every
                     slice that carries labels (training) or the automatic choice (measuring)
``spacing_row_mm``, ``spacing_col_mm``, ``window_lo_hu``, ``window_hi_hu``   PNG only
``date``             the scan's date (``YYYY-MM-DD`` or ``YYYYMMDD``): orders a patient's scans over
                     time (serial scans) where the image carries no StudyDate (NIfTI, PNG)
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from l3seg_lib.errors import L3SegInputError

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("image", "mask", "patient_id", "slice_index", "spacing_row_mm", "spacing_col_mm",
                    "window_lo_hu", "window_hi_hu", "date")


def is_blank(value: Any) -> bool:
    """None, NaN or an empty string: a cell left empty in a CSV."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


@dataclass
class ManifestEntry:
    """One manifest row, typed: paths resolved, numbers parsed, blanks as None."""

    image: Path
    mask: Path | None = None
    patient_id: str | None = None
    slice_index: int | None = None
    png_spacing_mm: tuple[float, float] | None = None
    """(row, col) pixel spacing in mm of a PNG export."""
    png_window_hu: tuple[float, float] | None = None
    """(low, high) export window in HU of a PNG export."""
    date: str | None = None
    """The scan's date as ``YYYY-MM-DD`` (the manifest's ``date`` column), None when blank."""

    @property
    def is_png(self) -> bool:
        """Whether the image is a PNG file."""
        return self.image.name.lower().endswith(".png")

    def png_kwargs(self) -> dict[str, Any]:
        """Keyword arguments :func:`l3seg_lib.imageio.reader.read_image` needs for a PNG."""
        if not self.is_png:
            return {}
        return {"spacing_mm": self.png_spacing_mm, "window_hu": self.png_window_hu, "patient_id": self.patient_id}


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV; ``image`` and ``mask`` paths are resolved against its folder.

    Raises :class:`L3SegInputError` naming the file for a missing file, an unreadable CSV, no
    ``image`` column or no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "manifest not found")
    try:
        df = pd.read_csv(path, dtype={"patient_id": str, "image": str, "mask": str, "date": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise L3SegInputError(path, f"not a readable CSV ({exc})") from None
    if "image" not in df.columns:
        raise L3SegInputError(path, f"manifest needs an 'image' column; found {list(df.columns)}")
    if df.empty:
        raise L3SegInputError(path, "manifest lists no cases")
    base = path.parent
    for col in ("image", "mask"):
        bad = [str(v) for v in df.get(col, []) if not is_blank(v) and any(ord(ch) < 32 for ch in str(v))]
        if bad:
            raise L3SegInputError(path, f"column {col!r}: path {bad[0]!r} holds a control character (e.g. NUL)")
        if col in df.columns:
            df[col] = [None if is_blank(v) else str((base / str(v)).resolve()) if not Path(str(v)).is_absolute() else str(v)
                       for v in df[col]]
    df.attrs["source"] = str(path)
    return df


def iso_date(text: Any) -> str | None:
    """A calendar date given as ``YYYY-MM-DD`` or ``YYYYMMDD`` (a DICOM DA) as ``YYYY-MM-DD``; None
    when blank or not a valid date."""
    if is_blank(text):
        return None
    digits = str(text).strip().replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return _dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:])).isoformat()
    except ValueError:
        return None


def entry_from_row(row: pd.Series | dict[str, Any], source: str | Path | None = None) -> ManifestEntry:
    """Parse one manifest row; a bad number is an error naming the manifest and the row's image."""
    def value(key: str) -> Any:
        """The row's value of ``key``; None when blank."""
        v = row.get(key)
        return None if is_blank(v) else v

    def number(key: str) -> float | None:
        """The row's value of ``key`` as a float (None when blank); an input error when it is not a number."""
        v = value(key)
        if v is None:
            return None
        try:
            return float(v)
        except (TypeError, ValueError):
            raise L3SegInputError(source or row.get("image"), f"{key} {v!r} of {row.get('image')} is not a number") from None

    index = number("slice_index")
    if index is not None and not float(index).is_integer():
        raise L3SegInputError(source or row.get("image"), f"slice_index {index!r} of {row.get('image')} is not an integer")
    spacing = (number("spacing_row_mm"), number("spacing_col_mm"))
    window = (number("window_lo_hu"), number("window_hi_hu"))
    pid = value("patient_id")
    mask = value("mask")
    date = value("date")
    if date is not None:
        iso = iso_date(date)
        if iso is None:
            raise L3SegInputError(source or row.get("image"), f"date {date!r} of {row.get('image')} is not a date "
                                                              "(YYYY-MM-DD or YYYYMMDD)")
        date = iso
    return ManifestEntry(
        image=Path(str(row["image"])), mask=None if mask is None else Path(str(mask)),
        patient_id=None if pid is None else str(pid).strip(), slice_index=None if index is None else int(index),
        png_spacing_mm=None if None in spacing else spacing,  # type: ignore[arg-type]
        png_window_hu=None if None in window else window,  # type: ignore[arg-type]
        date=date,
    )


def manifest_entries(path: str | Path) -> list[ManifestEntry]:
    """Every row of a manifest file as a :class:`ManifestEntry`."""
    df = read_manifest(path)
    return [entry_from_row(row, path) for _, row in df.iterrows()]
