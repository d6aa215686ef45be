"""What measuring produces: one :class:`SliceResult` per measured slice (its fields are the columns
of ``measurements.csv``, in order), one :class:`InputResult` per input (what the ledger keeps, so a
batch can resume) and the batch's :class:`MeasureResult`.

The output writers (:mod:`.writers`: CSV, HTML, masks, DICOM SEG/SR) read these fields by name;
:data:`COLUMNS` lists them, so a writer naming a column that does not exist fails in the tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

OPTIONAL = ("dicom_seg", "dicom_sr", "dicom_note")
"""Columns present only when they were produced (``--dicom``; the note only when SEG/SR were not written)."""


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
    age_years: Any = None
    # -- assess (composition.assess: clinical fields, SMI and verdicts) --
    sex: Any = None
    height_m: Any = None
    weight_kg: Any = None
    bmi_kg_m2: Any = None
    smi_cm2_m2: Any = None
    age_source: Any = None
    height_source: Any = None
    weight_source: Any = None
    bmi_source: Any = None
    sarcopenia: Any = None
    sarcopenia_reason: Any = None
    sarcopenic_obesity: Any = None
    sarcopenic_obesity_reason: Any = None
    myosteatosis: Any = None
    myosteatosis_reason: Any = None
    visceral_obesity: Any = None
    visceral_obesity_reason: Any = None
    cutoff_set: Any = None
    cutoff_references: Any = None
    # -- measure (composition.measure_slice: areas and densities) --
    sma_cm2: Any = None
    sat_cm2: Any = None
    vat_cm2: Any = None
    sma_refined_cm2: Any = None
    sat_refined_cm2: Any = None
    vat_refined_cm2: Any = None
    imat_cm2: Any = None
    tat_cm2: Any = None
    tat_refined_cm2: Any = None
    vat_sat_ratio: Any = None
    vat_sat_ratio_refined: Any = None
    muscle_hu_mean: Any = None
    muscle_hu_median: Any = None
    muscle_hu_sd: Any = None
    muscle_refined_hu_mean: Any = None
    muscle_refined_hu_median: Any = None
    muscle_refined_hu_sd: Any = None
    hu_calibrated: Any = None
    hu_range_muscle: Any = None
    hu_range_sat: Any = None
    hu_range_imat: Any = None
    hu_range_vat: Any = None
    # -- read and choose slices: the series and how the level is known --
    series_notes: str = ""
    level_source: str = ""
    l3_method: str = ""
    l3_confidence: Any = ""
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
        """From a row (as :meth:`to_row` gave it; e.g. from the ledger)."""
        return cls(**row)


COLUMNS = tuple(f.name for f in dataclasses.fields(SliceResult))
"""The columns of ``measurements.csv``, in order (:data:`OPTIONAL` ones only when produced)."""
FIELD_SET = frozenset(COLUMNS)


def results_table(slices: list[SliceResult]) -> pd.DataFrame:
    """``measurements.csv`` as a table."""
    return pd.DataFrame([s.to_row() for s in slices])


@dataclass
class InputResult:
    """Everything one input contributed to a batch (kept per input, so a batch can resume)."""

    source: str
    status: str = "measured"
    """``measured``, ``refused`` (errors.csv) or ``review`` (L3 not located)."""
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
