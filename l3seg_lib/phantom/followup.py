"""Follow-up scans of synthetic patients with a known change: the same patient (seed, habitus,
shapes) rendered again later with a chosen muscle loss and fat change, as DICOM studies with their
dates, and the true areas read from the phantom's own labels (what serial measurement must recover).

Muscle is changed through ``muscle_scale`` (muscle thickness), solved so that the true muscle area
of the middle slice changes by the chosen % (fat changes move the muscle envelope too, so the solve
comes after them); SAT through ``sat_mm``, VAT through ``vat_level``, weight as given. Each later
scan draws its slice-level variation (bowel, vessels, image noise) afresh (``PatientSpec.scan``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from l3seg_lib.phantom.labels import PHANTOM_LABEL_MAP
from l3seg_lib.phantom.patients import PatientSpec, make_patient
from l3seg_lib.phantom.render import render_slice
from l3seg_lib.phantom.writer import write_ct_slice
from l3seg_lib.tissues import TISSUES
from l3seg_lib.units import pixel_area_cm2


@dataclass(frozen=True)
class Visit:
    """One scan of a patient: days after the first, and the change since the first (in %)."""

    days: int
    muscle_pct: float = 0.0
    """Change of the true skeletal muscle area of the middle slice (e.g. -10: 10 % lost)."""
    sat_pct: float = 0.0
    """Change of the mean SAT thickness (the SAT area changes by about as much)."""
    vat_pct: float = 0.0
    """Change of the VAT level (the cavity's fat)."""
    weight_pct: float = 0.0


def _middle_muscle(spec: PatientSpec, matrix: int) -> float:
    """True muscle area (cm²) of the patient's middle slice."""
    _, lab, info = render_slice(spec, spec.n_slices // 2, matrix)
    return float(np.isin(lab, PHANTOM_LABEL_MAP["muscle"]).sum() * pixel_area_cm2((info["spacing_mm"], info["spacing_mm"])))


def followup_spec(spec: PatientSpec, visit: Visit, scan: int, matrix: int = 256) -> PatientSpec:
    """``spec`` as scanned at ``visit`` (``scan`` > 0 for a later scan): fat and weight changed as
    given, then ``muscle_scale`` solved (secant) so that the middle slice's true muscle area
    changes by ``visit.muscle_pct`` % (to within 0.1 %)."""
    weight = spec.weight_kg * (1 + visit.weight_pct / 100.0)
    new = dataclasses.replace(spec, scan=scan, sat_mm=spec.sat_mm * (1 + visit.sat_pct / 100.0),
                              vat_level=spec.vat_level * (1 + visit.vat_pct / 100.0),
                              weight_kg=round(weight, 1), bmi=round(weight / spec.height_m**2, 2))
    target = _middle_muscle(spec, matrix) * (1 + visit.muscle_pct / 100.0)
    s0, s1 = spec.muscle_scale, spec.muscle_scale * (1 + visit.muscle_pct / 100.0)
    a0 = _middle_muscle(dataclasses.replace(new, muscle_scale=s0), matrix)
    for _ in range(8):
        a1 = _middle_muscle(dataclasses.replace(new, muscle_scale=s1), matrix)
        if abs(a1 - target) <= 0.001 * target or a1 == a0:
            break
        s0, s1, a0 = s1, s1 + (target - a1) * (s1 - s0) / (a1 - a0), a1
    return dataclasses.replace(new, muscle_scale=float(s1))


def generate_followups(out_dir: str | Path, visits: list[Visit], n_patients: int = 2, seed: int = 0,
                       matrix: int = 256, n_slices: int = 3, start: str = "2026-01-05", dicom_dates: bool = True,
                       first_patient: int = 0) -> pd.DataFrame:
    """Write each patient's scans, one DICOM study per visit, under
    ``out_dir/dicom/<patient>_<YYYYMMDD>/`` (one series folder each, as ``measure`` takes them), and return the truth: one row per patient and visit
    (``patient_id, visit, date, days, study_folder``, true ``muscle_cm2``, ``sat_cm2``, ``vat_cm2``
    as the median over the slices, ``weight_kg``, and the requested changes). Also writes
    ``manifest.csv`` (``image, patient_id, date``; the visits' folders) and ``truth.csv``.
    ``dicom_dates=False`` leaves StudyDate out of the files (the manifest's dates order them).
    The first visit should be ``Visit(0)``: the baseline."""
    out = Path(out_dir)
    rows, manifest = [], []
    base_date = pd.Timestamp(start)
    for p in range(first_patient, first_patient + n_patients):
        spec = make_patient(p, seed, matrix, (n_slices, n_slices))
        for k, visit in enumerate(visits):
            s = spec if k == 0 and visit == Visit(0) else followup_spec(spec, visit, k, matrix)
            date = (base_date + pd.Timedelta(days=visit.days)).strftime("%Y%m%d")
            folder = out / "dicom" / f"{spec.patient_id}_{date}"
            areas = []
            for j in range(s.n_slices):
                hu, lab, info = render_slice(s, j, matrix)
                write_ct_slice(folder / f"IM{j + 1:04d}.dcm", hu, s, info, j + 1, (seed, k), info["z_mm"],
                               study_date=date if dicom_dates else None)
                px = pixel_area_cm2((info["spacing_mm"], info["spacing_mm"]))
                areas.append({t: float(np.isin(lab, PHANTOM_LABEL_MAP[t]).sum() * px) for t in TISSUES})
            truth = {f"{t}_cm2": float(np.median([a[t] for a in areas])) for t in TISSUES}
            iso = pd.Timestamp(date).date().isoformat()
            rows.append({"patient_id": spec.patient_id, "visit": k, "date": iso, "days": visit.days,
                         "study_folder": str(folder.relative_to(out)), **truth, "weight_kg": s.weight_kg,
                         "height_m": s.height_m, "muscle_pct": visit.muscle_pct, "sat_pct": visit.sat_pct,
                         "vat_pct": visit.vat_pct})
            manifest.append({"image": str(folder.relative_to(out)), "patient_id": spec.patient_id, "date": iso})
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(manifest).to_csv(out / "manifest.csv", index=False)
    truth = pd.DataFrame(rows)
    truth.to_csv(out / "truth.csv", index=False)
    return truth
