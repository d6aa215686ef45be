"""Body-composition measurements at L3 and their clinical verdicts.

Per slice, from HU, a class mask (0 background, 1 muscle, 2 SAT, 3 VAT) and pixel spacing:
areas in cm2 with and without HU-threshold refinement (Alberta protocol ranges by default),
intermuscular adipose tissue (IMAT: muscle-compartment pixels in the fat range), VAT/SAT ratio,
and muscle radiodensity (mean, median, SD in HU). With height, sex and BMI: skeletal muscle
index (SMI = refined SMA / height^2, cm2/m2) and the flags of a published cut-off set.

Verdicts use the refined areas and the refined muscle density, as the cut-off papers measured
muscle as the pixels of the muscle compartment within -29..+150 HU. A verdict whose inputs are
missing is "not computable" with the reason; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from l3seg_lib.measures import MYOSTEATOSIS, SARCOPENIA, SARCOPENIC_OBESITY, VISCERAL_OBESITY
from l3seg_lib.tissues import (
    MUSCLE,
    SAT,
    VAT,
    complete_hu_ranges,
    imat_mask,
    refined_mask,
)
from l3seg_lib.units import pixel_area_cm2

CITATIONS = {
    "martin2013": "Martin L, Birdsell L, MacDonald N, et al. Cancer cachexia in the age of obesity: skeletal muscle "
                  "depletion is a powerful prognostic factor, independent of body mass index. J Clin Oncol. "
                  "2013;31(12):1539-1547.",
    "prado2008": "Prado CMM, Lieffers JR, McCargar LJ, et al. Prevalence and clinical implications of sarcopenic "
                 "obesity in patients with solid tumours of the respiratory and gastrointestinal tracts: a "
                 "population-based study. Lancet Oncol. 2008;9(7):629-635.",
    "fearon2011": "Fearon K, Strasser F, Anker SD, et al. Definition and classification of cancer cachexia: an "
                  "international consensus. Lancet Oncol. 2011;12(5):489-495.",
    "jasso2002": "Examination Committee of Criteria for 'Obesity Disease' in Japan; Japan Society for the Study of "
                 "Obesity. New criteria for 'obesity disease' in Japan. Circ J. 2002;66(11):987-992.",
    "mourtzakis2008": "Mourtzakis M, Prado CMM, Lieffers JR, et al. A practical and precise approach to "
                      "quantification of body composition in cancer patients using computed tomography images "
                      "acquired during routine care. Appl Physiol Nutr Metab. 2008;33(5):997-1006.",
}


# --------------------------------------------------------------------------------------------
# measurements


def _hu_stats(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, median, SD) in HU of ``values``; NaN when empty (SD NaN for fewer than two values)."""
    if values.size == 0:
        return (np.nan, np.nan, np.nan)
    return float(values.mean()), float(np.median(values)), float(values.std(ddof=1)) if values.size > 1 else np.nan


def measure_slice(hu: np.ndarray, labels: np.ndarray, spacing_mm: tuple[float, float],
                  hu_ranges: dict[str, tuple[float, float]] | None = None, hu_calibrated: bool = True,
                  png_window_hu: tuple[float, float] | None = None) -> dict[str, Any]:
    """Areas (cm2), IMAT (cm2), VAT/SAT ratio and muscle density (HU) of one slice.

    ``*_cm2`` use the segmented compartments as they are; ``*_refined_cm2`` keep only pixels
    inside the tissue's HU range (``hu_ranges`` completed by
    :func:`l3seg_lib.tissues.complete_hu_ranges`: a tissue left out keeps its default;
    :func:`l3seg_lib.tissues.refined_mask`); IMAT is :func:`l3seg_lib.tissues.imat_mask`. Muscle density is given over the compartment and over
    the refined muscle. For PNG-derived HU (``hu_calibrated=False``) densities are reported only
    when the export window contains the muscle range, otherwise they are NaN.
    """
    if hu.shape != labels.shape:
        raise ValueError(f"image {hu.shape} and mask {labels.shape} differ in shape")
    ranges = complete_hu_ranges(hu_ranges)
    px_cm2 = pixel_area_cm2(spacing_mm)
    muscle, sat, vat = labels == MUSCLE.label, labels == SAT.label, labels == VAT.label
    muscle_ref, sat_ref, vat_ref = (refined_mask(labels, hu, t.key, ranges) for t in (MUSCLE, SAT, VAT))
    imat = imat_mask(labels, hu, ranges)
    out: dict[str, Any] = {
        "sma_cm2": muscle.sum() * px_cm2,
        "sat_cm2": sat.sum() * px_cm2,
        "vat_cm2": vat.sum() * px_cm2,
        "sma_refined_cm2": muscle_ref.sum() * px_cm2,
        "sat_refined_cm2": sat_ref.sum() * px_cm2,
        "vat_refined_cm2": vat_ref.sum() * px_cm2,
        "imat_cm2": imat.sum() * px_cm2,
    }
    out["tat_cm2"] = out["sat_cm2"] + out["vat_cm2"]
    out["tat_refined_cm2"] = out["sat_refined_cm2"] + out["vat_refined_cm2"]
    out["vat_sat_ratio"] = out["vat_cm2"] / out["sat_cm2"] if out["sat_cm2"] > 0 else np.nan
    out["vat_sat_ratio_refined"] = out["vat_refined_cm2"] / out["sat_refined_cm2"] if out["sat_refined_cm2"] > 0 else np.nan
    density_ok = hu_calibrated
    if not hu_calibrated and png_window_hu is not None:
        lo, hi = ranges["muscle"]
        density_ok = png_window_hu[0] <= lo and png_window_hu[1] >= hi
    stats_c = _hu_stats(hu[muscle]) if density_ok else (np.nan,) * 3
    stats_r = _hu_stats(hu[muscle_ref]) if density_ok else (np.nan,) * 3
    out.update({
        "muscle_hu_mean": stats_c[0], "muscle_hu_median": stats_c[1], "muscle_hu_sd": stats_c[2],
        "muscle_refined_hu_mean": stats_r[0], "muscle_refined_hu_median": stats_r[1], "muscle_refined_hu_sd": stats_r[2],
        "hu_calibrated": bool(hu_calibrated),
    })
    for key, (lo, hi) in ranges.items():
        out[f"hu_range_{key}"] = f"{lo:g}..{hi:g}"
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# cut-offs


class Answer(StrEnum):
    """A verdict's answer as the tables show it (``sarcopenia`` etc. in ``measurements.csv``)."""
    YES = "yes"
    NO = "no"
    NOT_COMPUTABLE = "not computable"

    @classmethod
    def of(cls, value: bool | None) -> Answer:
        """``yes`` for True, ``no`` for False, ``not computable`` for None."""
        return cls.NOT_COMPUTABLE if value is None else cls.YES if value else cls.NO


@dataclass(frozen=True)
class Verdict:
    """A cut-off verdict: met, not met or not computable, with the reason."""
    value: bool | None
    """True (criterion met), False (not met) or None (not computable)."""
    reason: str

    @property
    def text(self) -> str:
        """The verdict as text: ``yes``, ``no`` or ``not computable``, then the reason."""
        return f"{Answer.of(self.value)}: {self.reason}"


def _missing(**values: Any) -> list[str]:
    """Names of the keyword arguments that are None or a non-finite float (missing inputs of a verdict)."""
    return [k for k, v in values.items() if v is None or (isinstance(v, float) and not np.isfinite(v))]


def _without_bmi(below_both: bool, above_both: bool, value: str, unit: str, cuts: tuple[float, float],
                 source: str) -> Verdict:
    """A BMI-specific criterion decided without BMI where every BMI group's cut-off agrees (the
    value below both cut-offs, or at or above both); not computable in between."""
    lo, hi = cuts
    if below_both:
        return Verdict(True, f"{value} < {lo:g} {unit}: below the cut-off of every BMI group, BMI not needed ({source})")
    if above_both:
        return Verdict(False, f"{value} >= {hi:g} {unit}: at or above the cut-off of every BMI group, BMI not needed "
                              f"({source})")
    return Verdict(None, f"BMI missing: {value} lies between the BMI groups' cut-offs ({lo:g} and {hi:g} {unit})")


def sarcopenia_martin2013(smi: float | None, sex: str | None, bmi: float | None) -> Verdict:
    """Martin 2013: SMI < 43 cm²/m² (men, BMI < 25), < 53 (men, BMI >= 25), < 41 (women)."""
    miss = _missing(SMI=smi, sex=sex) + (_missing(BMI=bmi) if sex == "M" else [])
    if miss == ["BMI"]:  # men: both BMI groups' cut-offs give the same answer below 43 and from 53 cm²/m²
        return _without_bmi(smi < 43.0, smi >= 53.0, f"SMI {smi:.1f}", "cm²/m²", (43.0, 53.0), "men; Martin 2013")
    if miss:
        return Verdict(None, f"{', '.join(miss)} missing")
    if sex == "F":
        cut, group = 41.0, "women"
    else:
        cut, group = (43.0, "men, BMI < 25") if bmi < 25 else (53.0, "men, BMI >= 25")
    return Verdict(smi < cut, f"SMI {smi:.1f} {'<' if smi < cut else '>='} {cut:g} cm²/m² ({group}; Martin 2013)")


def sarcopenia_fearon2011(smi: float | None, sex: str | None, bmi: float | None = None) -> Verdict:
    """Fearon 2011 consensus: SMI < 55 cm²/m² (men), < 39 (women)."""
    miss = _missing(SMI=smi, sex=sex)
    if miss:
        return Verdict(None, f"{', '.join(miss)} missing")
    cut = 55.0 if sex == "M" else 39.0
    group = "men" if sex == "M" else "women"
    return Verdict(smi < cut, f"SMI {smi:.1f} {'<' if smi < cut else '>='} {cut:g} cm²/m² ({group}; Fearon 2011)")


def sarcopenic_obesity_prado2008(smi: float | None, sex: str | None, bmi: float | None) -> Verdict:
    """Prado 2008: BMI >= 30 and SMI < 52.4 cm²/m² (men) or < 38.5 (women)."""
    miss = _missing(SMI=smi, sex=sex, BMI=bmi)
    if miss:
        return Verdict(None, f"{', '.join(miss)} missing")
    cut = 52.4 if sex == "M" else 38.5
    group = "men" if sex == "M" else "women"
    if bmi < 30:
        return Verdict(False, f"BMI {bmi:.1f} < 30 kg/m², not obese (Prado 2008)")
    low = smi < cut
    return Verdict(low, f"BMI {bmi:.1f} >= 30 and SMI {smi:.1f} {'<' if low else '>='} {cut:g} cm²/m² ({group}; Prado 2008)")


def myosteatosis_martin2013(muscle_hu: float | None, bmi: float | None) -> Verdict:
    """Martin 2013: mean muscle attenuation < 41 HU (BMI < 25) or < 33 HU (BMI >= 25), both sexes."""
    miss = _missing(**{"muscle HU": muscle_hu, "BMI": bmi})
    if miss == ["BMI"]:  # both BMI groups' cut-offs give the same answer below 33 and from 41 HU
        return _without_bmi(muscle_hu < 33.0, muscle_hu >= 41.0, f"muscle {muscle_hu:.1f} HU", "HU", (33.0, 41.0),
                            "Martin 2013")
    if miss:
        return Verdict(None, f"{', '.join(miss)} missing")
    cut, group = (41.0, "BMI < 25") if bmi < 25 else (33.0, "BMI >= 25")
    low = muscle_hu < cut
    return Verdict(low, f"muscle {muscle_hu:.1f} HU {'<' if low else '>='} {cut:g} HU ({group}; Martin 2013)")


def visceral_obesity_100(vat_cm2: float | None) -> Verdict:
    """VAT area >= 100 cm2 (Japan Society for the Study of Obesity, 2002)."""
    if _missing(VAT=vat_cm2):
        return Verdict(None, "VAT area missing")
    high = vat_cm2 >= 100.0
    return Verdict(high, f"VAT {vat_cm2:.1f} cm² {'>=' if high else '<'} 100 cm² (JASSO 2002)")


@dataclass(frozen=True)
class CutoffSet:
    """A named set of cut-offs: one verdict function per condition (a field for each key of
    :data:`l3seg_lib.measures.VERDICTS`), with its description and references."""
    name: str
    description: str
    sarcopenia: Callable[..., Verdict]
    sarcopenic_obesity: Callable[..., Verdict]
    myosteatosis: Callable[..., Verdict]
    visceral_obesity: Callable[..., Verdict]
    references: tuple[str, ...]

    def citation_text(self) -> str:
        """The set's references as numbered citations."""
        return " ".join(f"[{i + 1}] {CITATIONS[r]}" for i, r in enumerate(self.references))


CUTOFF_SETS = {
    "martin2013": CutoffSet(
        "martin2013",
        "Sarcopenia and myosteatosis: Martin 2013 (sex- and BMI-specific); sarcopenic obesity: Prado 2008; "
        "visceral obesity: VAT >= 100 cm² (JASSO 2002). Areas and density by the Alberta protocol "
        "(Mourtzakis 2008) HU ranges.",
        sarcopenia_martin2013, sarcopenic_obesity_prado2008, myosteatosis_martin2013, visceral_obesity_100,
        ("martin2013", "prado2008", "jasso2002", "mourtzakis2008"),
    ),
    "fearon2011": CutoffSet(
        "fearon2011",
        "Sarcopenia: Fearon 2011 international consensus (SMI < 55 men, < 39 women); sarcopenic obesity: "
        "Prado 2008; myosteatosis: Martin 2013; visceral obesity: VAT >= 100 cm² (JASSO 2002).",
        sarcopenia_fearon2011, sarcopenic_obesity_prado2008, myosteatosis_martin2013, visceral_obesity_100,
        ("fearon2011", "prado2008", "martin2013", "jasso2002", "mourtzakis2008"),
    ),
}


def get_cutoff_set(name: str) -> CutoffSet:
    """The cut-off set called ``name``; ValueError naming the available sets when it is unknown."""
    if name not in CUTOFF_SETS:
        raise ValueError(f"unknown cut-off set {name!r}; available: {sorted(CUTOFF_SETS)}")
    return CUTOFF_SETS[name]


def assess(measures: dict[str, Any], clinical: dict[str, Any], cutoffs: str | CutoffSet = "martin2013") -> dict[str, Any]:
    """SMI and the verdicts of a cut-off set for one slice's measurements and a patient's
    clinical variables (``sex`` M/F, ``height_m``, ``weight_kg``, ``bmi``)."""
    cs = get_cutoff_set(cutoffs) if isinstance(cutoffs, str) else cutoffs
    sex = clinical.get("sex")
    height = clinical.get("height_m")
    bmi = clinical.get("bmi")
    if bmi is None and height and clinical.get("weight_kg"):
        bmi = float(clinical["weight_kg"]) / float(height) ** 2
    sma = measures.get("sma_refined_cm2")
    smi = None if height is None or sma is None else float(sma) / float(height) ** 2
    hu = measures.get("muscle_refined_hu_mean")
    hu = None if hu is None or (isinstance(hu, float) and not np.isfinite(hu)) else float(hu)
    verdicts = {  # in the order of l3seg_lib.measures.VERDICTS
        SARCOPENIA.key: cs.sarcopenia(smi, sex, bmi),
        SARCOPENIC_OBESITY.key: cs.sarcopenic_obesity(smi, sex, bmi),
        MYOSTEATOSIS.key: cs.myosteatosis(hu, bmi),
        VISCERAL_OBESITY.key: cs.visceral_obesity(measures.get("vat_refined_cm2")),
    }
    out: dict[str, Any] = {
        "sex": sex, "height_m": height, "weight_kg": clinical.get("weight_kg"),
        "bmi_kg_m2": None if bmi is None else round(float(bmi), 2),
        "smi_cm2_m2": None if smi is None else round(smi, 2),
        **{k: clinical[k] for k in ("age_source", "height_source", "weight_source", "bmi_source") if k in clinical},
    }
    rejected = [str(clinical[k]) for k in ("height_source", "weight_source", "bmi_source")
                if "not used" in str(clinical.get(k) or "")]
    for key, v in verdicts.items():
        out[key] = Answer.of(v.value)
        out[f"{key}_reason"] = v.reason + (f" ({'; '.join(rejected)})" if v.value is None and rejected else "")
    out["cutoff_set"] = cs.name
    out["cutoff_references"] = "; ".join(cs.references)
    return out
