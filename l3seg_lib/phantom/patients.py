"""Synthetic patients: habitus (sex, age, height, BMI) and acquisition, drawn from a seed."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

SLICE_GAP_MM = 3.0
"""Distance between the slices of a patient (mm)."""


@dataclass
class PatientSpec:
    """Habitus and acquisition of one synthetic patient (lengths in mm, HU in HU)."""

    patient_id: str
    sex: str
    age: int
    height_m: float
    weight_kg: float
    bmi: float
    n_slices: int
    spacing_mm: float
    iv_contrast: bool
    oral_contrast: bool
    mirrored_storage: bool
    """Stored with the row direction pointing to the patient's right (exercises orientation)."""
    muscle_scale: float
    vat_level: float
    sat_mm: float
    muscle_hu: float
    sat_hu: float
    vat_hu: float
    noise_sd: float
    seed: int
    realism: bool = False
    """Add what real scans hold (:mod:`l3seg_lib.phantom.realism`)."""
    scan: int = 0
    """Which scan of the patient (0 the first): a later scan draws its slice-level variation (bowel,
    vessels, noise) afresh, its shapes stay the patient's (:mod:`l3seg_lib.phantom.followup`)."""


def make_patient(index: int, seed: int, matrix: int = 512, slices: tuple[int, int] = (1, 3),
                 realism: bool = False) -> PatientSpec:
    """Synthetic patient ``index`` drawn reproducibly from ``seed``: sex, age, height (m), weight (kg), BMI,
    muscle, SAT and VAT habitus, tissue HU and acquisition (wider habitus with ``realism``)."""
    rng = np.random.default_rng([seed, index, 1])
    sex = "M" if rng.random() < 0.5 else "F"
    age = int(rng.integers(28, 88))
    height = rng.normal(1.76, 0.07) if sex == "M" else rng.normal(1.63, 0.065)
    height = float(np.clip(height, 1.45, 2.02))
    bmi = float(np.clip(np.exp(rng.normal(np.log(26.0), 0.2)), 16.5, 45.0))
    weight = bmi * height**2
    # muscle: SMI target drawn around published means, lower with age; scale ~ sqrt(area)
    smi = (rng.normal(50.0, 8.0) if sex == "M" else rng.normal(40.0, 6.5)) - 0.12 * (age - 50) + 0.35 * (bmi - 25)
    smi = float(np.clip(smi, 26.0, 75.0))
    muscle_scale = math.sqrt(smi * height**2 / (165.0 if sex == "M" else 190.0))
    vat = 0.06 + 0.03 * (bmi - 19.0) * (1.25 if sex == "M" else 0.8) + 0.003 * (age - 45) + rng.normal(0, 0.05)
    sat_mm = (3.0 + 2.1 * (bmi - 17.5) * (1.45 if sex == "F" else 0.95)) * rng.lognormal(0, 0.2)
    muscle_hu = 48.0 - 0.28 * (age - 40) - 0.55 * (bmi - 25) + rng.normal(0, 5.0)
    lo, hi = slices
    spec = PatientSpec(
        patient_id=f"L3P{index + 1:04d}",
        sex=sex, age=age, height_m=round(height, 3), weight_kg=round(weight, 1), bmi=round(bmi, 2),
        n_slices=int(rng.integers(lo, hi + 1)),
        spacing_mm=float(rng.uniform(0.6, 1.0)),
        iv_contrast=bool(rng.random() < 0.55),
        oral_contrast=bool(rng.random() < 0.25),
        mirrored_storage=bool(rng.random() < 0.1),
        muscle_scale=float(muscle_scale),
        vat_level=float(np.clip(vat, 0.03, 0.8)),
        sat_mm=float(np.clip(sat_mm, 2.5, 85.0)),
        muscle_hu=float(np.clip(muscle_hu, 12.0, 62.0)),
        sat_hu=float(rng.normal(-104.0, 6.0)),
        vat_hu=float(rng.normal(-92.0, 6.0)),
        noise_sd=0.0,
        seed=int(rng.integers(0, 2**31 - 1)),
    )
    if realism:
        from l3seg_lib.phantom.realism import rng_for, widen_habitus

        spec = widen_habitus(dataclasses.replace(spec, realism=True), rng_for(spec, 0, 0))
    return spec


