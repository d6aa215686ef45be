"""What measuring produces: one :class:`SliceResult` per measured slice (its fields are the columns
of ``measurements.csv``, in order), one :class:`InputResult` per input (what the ledger keeps, so a
batch can resume) and the batch's :class:`MeasureResult`.

The output writers (:mod:`.writers`: CSV, HTML, masks, DICOM SEG/SR) read these fields by name;
:data:`COLUMNS` lists them, so a writer naming a column that does not exist fails in the tests.
Coded values are enums whose text is what the tables, pages and DICOM SR show (:class:`LevelSource`,
:class:`InputStatus`, :class:`~l3seg_lib.measurement.composition.Answer`,
:class:`~l3seg_lib.localize.l3.Confidence`); ``str()`` of each is its text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from l3seg_lib.localize.l3 import Confidence
from l3seg_lib.measurement.composition import Answer
from l3seg_lib.measures import VERDICT_KEYS

OPTIONAL = ("dicom_seg", "dicom_sr", "dicom_note")
"""Columns present only when they were produced (``--dicom``; the note only when SEG/SR were not written)."""


class LevelSource(StrEnum):
    """How a measured slice's vertebral level is known (``level_source`` in ``measurements.csv``)."""
    LOCALISER = "localiser"
    """L3 found by the localiser in the whole series or volume."""
    MANIFEST = "manifest"
    """The slice named by the manifest's slice_index (vouched for by the user)."""
    AS_GIVEN = "as given (level not checked)"
    """A single slice, or every slice of a short input, measured as given: nothing checked that it lies at L3."""


class InputStatus(StrEnum):
    """What became of one input (``status`` in ``ledger.csv``)."""
    MEASURED = "measured"
    REFUSED = "refused"
    """Listed in ``errors.csv``."""
    REVIEW = "review"
    """L3 not located: listed for review in ``errors.csv``, not measured."""


@dataclass
class SliceResult:
    """One measured slice: a row of ``measurements.csv`` (fields in column order)."""

    # -- which slice (read, choose slices) --
    patient_id: str
    source: str
    slice_index: int
    slice_id: str
    slice_location_mm: float
    pixel_spacing_row_mm: float
    pixel_spacing_col_mm: float
    age_years: float | None = None
    # -- assess (composition.assess: clinical fields, SMI and verdicts) --
    sex: str | None = None
    """``M`` or ``F``."""
    height_m: float | None = None
    weight_kg: float | None = None
    bmi_kg_m2: float | None = None
    smi_cm2_m2: float | None = None
    age_source: str | None = None
    height_source: str | None = None
    weight_source: str | None = None
    bmi_source: str | None = None
    sarcopenia: Answer | None = None
    sarcopenia_reason: str | None = None
    sarcopenic_obesity: Answer | None = None
    sarcopenic_obesity_reason: str | None = None
    myosteatosis: Answer | None = None
    myosteatosis_reason: str | None = None
    visceral_obesity: Answer | None = None
    visceral_obesity_reason: str | None = None
    cutoff_set: str | None = None
    cutoff_references: str | None = None
    # -- measure (composition.measure_slice: areas in cm², densities in HU; NaN where not computable) --
    sma_cm2: float | None = None
    sat_cm2: float | None = None
    vat_cm2: float | None = None
    sma_refined_cm2: float | None = None
    sat_refined_cm2: float | None = None
    vat_refined_cm2: float | None = None
    imat_cm2: float | None = None
    tat_cm2: float | None = None
    tat_refined_cm2: float | None = None
    vat_sat_ratio: float | None = None
    vat_sat_ratio_refined: float | None = None
    muscle_hu_mean: float | None = None
    muscle_hu_median: float | None = None
    muscle_hu_sd: float | None = None
    muscle_refined_hu_mean: float | None = None
    muscle_refined_hu_median: float | None = None
    muscle_refined_hu_sd: float | None = None
    hu_calibrated: bool | None = None
    hu_range_muscle: str | None = None
    """The HU range used, as ``lo..hi``."""
    hu_range_sat: str | None = None
    hu_range_imat: str | None = None
    hu_range_vat: str | None = None
    # -- read and choose slices: the series and how the level is known --
    series_notes: str = ""
    level_source: LevelSource | Literal[""] = ""
    l3_method: str = ""
    l3_confidence: Confidence | Literal[""] = ""
    """The localiser's confidence; empty when the level was not located by it."""
    l3_range: str = ""
    localizer_picture: str = ""
    l3_notes: str = ""
    input_slices: int = 0
    files_skipped: int = 0
    # -- segment --
    inference_s: float = 0.0
    model: str = ""
    # -- writers and flag --
    overlay: str = ""
    review_required: bool = False
    review_reasons: str = ""
    mask_nifti: str = ""
    mask_tag: str = ""
    dicom_seg: str | None = None
    dicom_sr: str | None = None
    dicom_note: str | None = None
    # -- verdict status (reporting.reasons.verdict_status, from the verdicts and review reasons) --
    sarcopenia_status: str = ""
    sarcopenic_obesity_status: str = ""
    myosteatosis_status: str = ""
    visceral_obesity_status: str = ""
    review_severity: str = ""
    verdicts_provisional_reason: str = ""
    # -- read: the scan's place in the patient's time line (serial scans, :mod:`.serial`) --
    study_date: str = ""
    """YYYY-MM-DD: StudyDate, else AcquisitionDate, else the manifest's ``date`` ("" when none or they conflict)."""
    date_source: str = ""
    """Where ``study_date`` came from, or why there is none."""
    study_uid: str = ""
    series_uid: str = ""
    issuer_of_patient_id: str = ""

    def to_row(self) -> dict[str, Any]:
        """The row of ``measurements.csv`` (optional columns only when produced)."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in OPTIONAL:
            if row[name] is None:
                del row[name]
        return row

    def update(self, values: dict[str, Any]) -> None:
        """Set fields from a stage's named values (refuses names that are not columns)."""
        unknown = set(values) - FIELD_SET
        if unknown:
            raise KeyError(f"not columns of measurements.csv: {sorted(unknown)}")
        for k, v in values.items():
            setattr(self, k, v)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SliceResult:
        """From a row (as :meth:`to_row` gave it; e.g. from the ledger's JSON: coded values back to their enums)."""
        row = dict(row)
        for name, code in CODED.items():
            if row.get(name):
                row[name] = code(row[name])
        return cls(**row)


COLUMNS = tuple(f.name for f in dataclasses.fields(SliceResult))
"""The columns of ``measurements.csv``, in order (:data:`OPTIONAL` ones only when produced)."""
FIELD_SET = frozenset(COLUMNS)
CODED: dict[str, type[StrEnum]] = {"level_source": LevelSource, "l3_confidence": Confidence,
                                   **{key: Answer for key in VERDICT_KEYS}}
"""Columns holding coded values, with their enum."""


def results_table(slices: list[SliceResult]) -> pd.DataFrame:
    """``measurements.csv`` as a table."""
    return pd.DataFrame([s.to_row() for s in slices])


@dataclass
class InputResult:
    """Everything one input contributed to a batch (kept per input, so a batch can resume)."""

    source: str
    status: InputStatus = InputStatus.MEASURED
    reason: str = ""
    seconds: float = 0.0
    rows: list[SliceResult] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    frame_of_reference: str = ""
    """FrameOfReferenceUID of a DICOM input (series of one scan share it), else ``""``."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for the ledger's JSON)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["rows"] = [r.to_row() for r in self.rows]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputResult:
        """Rebuild from :meth:`to_dict` data (its slice rows parsed back)."""
        d = dict(d)
        d["rows"] = [SliceResult.from_row(r) for r in d.get("rows", [])]
        if "status" in d:
            d["status"] = InputStatus(d["status"])
        return cls(**d)


@dataclass
class MeasureResult:
    """Result of measuring a folder: measurements, refused inputs, skipped files, validation and agreement tables."""
    measurements: pd.DataFrame
    errors: pd.DataFrame
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    out_dir: Path | None = None
    skipped: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Files inside series folders that were not measured (localizers, dose reports, other series, ...)."""
    inputs_measured: int = 0
    """Inputs measured (this run or, resumed, an earlier one)."""
    inputs_not_measured: int = 0
    """Inputs refused or listed for review."""
