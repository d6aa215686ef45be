"""Clinical variables of a patient (sex, age, height, weight, BMI): from a CSV and from DICOM.

The same rules hold for both sources. Height is metres (DICOM PatientSize; CSV ``height_m``, or
``height_cm``), weight kilograms (PatientWeight; ``weight_kg``), age years. An implausible value
is never used silently: a height of 100-250 in a metres field is read as centimetres (and 1.0-2.5
in a centimetres field as metres), a weight of 20 000-350 000 as grams, with the conversion
written in every output row (``height_source``, ``weight_source``, ``age_source``); anything
else outside height 1.0-2.5 m, weight 20-350 kg, age 0-120 years, BMI 10-100 kg/m² is not used,
and the verdicts that need it say "not computable" and why. Placeholder ages (``000Y``,
``000D`` ...) are missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from l3seg_lib.data.manifest import is_blank
from l3seg_lib.errors import L3SegInputError
from l3seg_lib.imageio.ct import ImageMeta

HEIGHT_RANGE_M = (1.0, 2.5)
WEIGHT_RANGE_KG = (20.0, 350.0)
AGE_RANGE_Y = (0.0, 120.0)
BMI_RANGE = (10.0, 100.0)
CLINICAL_KEYS = ("sex", "age", "height_m", "weight_kg", "bmi")
SOURCE_KEYS = ("age_source", "height_source", "weight_source", "bmi_source")
"""Per variable, where its value came from, any conversion, or why it was not used."""

_SEX = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}
_AGE_UNITS = {"Y": 1.0, "M": 1 / 12, "W": 1 / 52.18, "D": 1 / 365.25}


@dataclass(frozen=True)
class Reading:
    """A clinical value as used (None when not usable) and what was done with the raw value."""

    value: float | None
    source: str


def _number(raw: Any) -> float | None:
    """``raw`` as a finite float; None when blank, not a number or not finite."""
    if is_blank(raw):
        return None
    try:
        v = float(raw)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _fmt(v: float) -> str:
    """``v`` formatted compactly (``:g``)."""
    return f"{v:g}"


def read_height(raw: Any, field: str, unit: str = "m") -> Reading:
    """Height in m from a field declared in ``unit`` (``m`` or ``cm``), e.g. PatientSize."""
    v = _number(raw)
    if v is None:
        return _not_a_number(raw, field)
    lo, hi = HEIGHT_RANGE_M
    metres = v / 100.0 if unit == "cm" else v
    if lo <= metres <= hi:
        return Reading(round(metres, 4), f"{field} {_fmt(v)} {unit}")
    other = v if unit == "cm" else v / 100.0  # the other unit
    if lo <= other <= hi:
        wrong = "m" if unit == "cm" else "cm"
        return Reading(round(other, 4), f"{field} {_fmt(v)} read as {wrong}")
    return Reading(None, f"{field} {_fmt(v)} not used: outside {lo:g}-{hi:g} m in m or cm")


def _not_a_number(raw: Any, field: str) -> Reading:
    """The reading of a blank cell (no note) or of text that is not a number."""
    return Reading(None, "" if is_blank(raw) else f"{field} {raw!r} not used: not a number")


def read_weight(raw: Any, field: str) -> Reading:
    """Weight in kg, e.g. from PatientWeight."""
    v = _number(raw)
    if v is None:
        return _not_a_number(raw, field)
    lo, hi = WEIGHT_RANGE_KG
    if lo <= v <= hi:
        return Reading(v, f"{field} {_fmt(v)} kg")
    if lo * 1000 <= v <= hi * 1000:
        return Reading(round(v / 1000.0, 3), f"{field} {_fmt(v)} read as g")
    return Reading(None, f"{field} {_fmt(v)} not used: outside {lo:g}-{hi:g} kg")


def read_age(raw: Any, field: str) -> Reading:
    """Age in years from a number of years or a DICOM age string (``065Y``, ``003M`` ...);
    placeholders (``000Y``, ``000D`` ...) are missing."""
    if is_blank(raw):
        return Reading(None, "")
    text = str(raw).strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] in _AGE_UNITS:
        if int(text[:3]) == 0:
            return Reading(None, f"{field} {text} not used: a placeholder, not an age")
        years = round(int(text[:3]) * _AGE_UNITS[text[3]], 2)
    else:
        years = _number(raw)
        if years is None:
            return Reading(None, f"{field} {raw!r} not used: not an age")
        if years == 0 and field == "PatientAge":
            return Reading(None, f"{field} {text} not used: a placeholder, not an age")
    lo, hi = AGE_RANGE_Y
    if not lo <= years <= hi:
        return Reading(None, f"{field} {text} not used: outside {lo:g}-{hi:g} years")
    return Reading(years, f"{field} {text}")


def read_bmi(raw: Any, field: str) -> Reading:
    """BMI in kg/m² from ``raw``, refused (value None, with the reason) when not a number or outside
    :data:`BMI_RANGE`."""
    v = _number(raw)
    if v is None:
        return _not_a_number(raw, field)
    lo, hi = BMI_RANGE
    if not lo <= v <= hi:
        return Reading(None, f"{field} {_fmt(v)} not used: outside {lo:g}-{hi:g} kg/m²")
    return Reading(v, f"{field} {_fmt(v)}")


def read_sex(raw: Any) -> str | None:
    """Sex as ``M`` or ``F`` from common spellings (m/male/man, f/female/woman); None when blank or unrecognised."""
    if is_blank(raw):
        return None
    return _SEX.get(str(raw).strip().lower())


def _csv_readings(row: dict[str, Any], csv: str) -> dict[str, Any]:
    """One CSV row through the rules: values and their sources."""
    def pick(*readings: Reading) -> Reading:
        """The first reading with a value or a stated source; an empty reading when none has."""
        for r in readings:
            if r.value is not None or r.source:
                return r
        return Reading(None, "")

    age = read_age(row.get("age"), f"{csv} age")
    height = pick(read_height(row.get("height_m"), f"{csv} height_m", "m"),
                  read_height(row.get("height_cm"), f"{csv} height_cm", "cm"))
    weight = read_weight(row.get("weight_kg"), f"{csv} weight_kg")
    bmi = read_bmi(row.get("bmi"), f"{csv} bmi")
    if bmi.value is None and not bmi.source and height.value is not None and weight.value is not None:
        computed = read_bmi(weight.value / height.value ** 2, "weight / height²")
        bmi = Reading(computed.value, "weight / height²" if computed.value is not None else computed.source)
    return {"sex": read_sex(row.get("sex")), "age": age.value, "height_m": height.value, "weight_kg": weight.value,
            "bmi": bmi.value, "age_source": age.source, "height_source": height.source,
            "weight_source": weight.source, "bmi_source": bmi.source}


def read_clinical(path: str | Path) -> pd.DataFrame:
    """Read clinical variables, one row per patient, indexed by ``patient_id``.

    Recognised columns: ``sex`` (M/F), ``age`` (years), ``height_m`` or ``height_cm``,
    ``weight_kg``, ``bmi`` (kg/m2). Returns ``sex, age, height_m, weight_kg, bmi`` after the
    plausibility rules of this module, with ``*_source`` columns saying what was done. An
    unreadable file, a missing ``patient_id`` column, a repeated patient or a sex other than M/F
    is an error naming the file (and row).
    """
    path = Path(path)
    if not path.is_file():
        raise L3SegInputError(path, "clinical CSV not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise L3SegInputError(path, f"not a readable CSV ({exc})") from None
    if "patient_id" not in df.columns:
        raise L3SegInputError(path, "clinical CSV needs a 'patient_id' column")
    if df.empty:
        raise L3SegInputError(path, "clinical CSV lists no patients (a header and no rows)")
    if df["patient_id"].duplicated().any():
        dup = df.loc[df["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise L3SegInputError(path, f"patient_id {dup!r} appears more than once")
    rows = []
    for i, raw in enumerate(df.to_dict("records")):
        if not is_blank(raw.get("sex")) and read_sex(raw.get("sex")) is None:
            raise L3SegInputError(path, f"row {i + 2}: sex {raw['sex']!r} is not M/F (male/female)")
        rows.append({"patient_id": str(raw["patient_id"]), **_csv_readings(raw, path.name)})
    out = pd.DataFrame(rows).set_index("patient_id")
    out = out.astype(object).where(out.notna(), None)
    return out


def clinical_for(patient_id: str, clinical: pd.DataFrame | None, image_meta: ImageMeta | None = None
                 ) -> dict[str, Any]:
    """Clinical variables of one patient: the CSV (:func:`read_clinical`) first, then DICOM
    PatientSex, PatientAge, PatientSize (m) and PatientWeight (kg), each through the
    plausibility rules of this module.

    Returns ``sex, age, height_m, weight_kg, bmi`` (None when missing or not usable; never
    guessed) and ``age_source, height_source, weight_source, bmi_source`` saying where each
    value came from, any conversion, or why it was not used.
    """
    dicom = (image_meta or ImageMeta()).acquisition
    row: dict[str, Any] = {}
    if clinical is not None and patient_id in clinical.index:
        row = {k: (None if is_blank(v) else v) for k, v in clinical.loc[patient_id].to_dict().items()}

    def csv(key: str) -> Reading:
        """The already-read CSV value of ``key`` with its ``<name>_source`` column as a reading."""
        source = f"{key.split('_')[0]}_source"  # height_m -> height_source
        return Reading(None if row.get(key) is None else float(row[key]), row.get(source) or "")

    def first(*readings: Reading) -> Reading:
        """The first usable reading; values passed over on the way are named in its source."""
        passed: list[str] = []
        for r in readings:
            if r.value is not None:
                return Reading(r.value, "; ".join([r.source, *passed]))
            if r.source:
                passed.append(r.source)
        return Reading(None, "; ".join(passed))

    sex = row.get("sex") or read_sex(dicom.patient_sex)
    age = first(csv("age"), read_age(dicom.patient_age, "PatientAge"))
    height = first(csv("height_m"), read_height(dicom.patient_size, "PatientSize", "m"))
    weight = first(csv("weight_kg"), read_weight(dicom.patient_weight, "PatientWeight"))
    bmi = csv("bmi")
    if bmi.value is None and height.value is not None and weight.value is not None:
        computed = read_bmi(weight.value / height.value ** 2, "weight / height²")
        bmi = Reading(computed.value, "; ".join(x for x in ("weight / height²" if computed.value is not None
                                                             else computed.source, bmi.source) if x))
    return {"sex": sex, "age": age.value, "height_m": height.value, "weight_kg": weight.value, "bmi": bmi.value,
            "age_source": age.source, "height_source": height.source, "weight_source": weight.source,
            "bmi_source": bmi.source}
