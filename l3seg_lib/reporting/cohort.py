"""A cohort at a glance, from ``measurements.csv``: one row per patient (the median of a patient's
slices when there are several), counts per verdict, medians, and small inline SVG strip plots of
SMI, muscle density and VAT by sex (no picture files, no script: they print and mail as they are)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from l3seg_lib.reporting.reasons import SEVERITIES, VERDICT_NAMES, VERDICTS, ranked_reasons, verdict_status

NUMBERS = ("sma_refined_cm2", "smi_cm2_m2", "muscle_refined_hu_mean", "imat_cm2", "sat_refined_cm2",
           "vat_refined_cm2")
"""The numbers the cohort table shows per patient (refined areas in cm², SMI in cm²/m², HU)."""


def _num(v: Any) -> float:
    """``v`` as a float (NaN when it is missing or not a number)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _status_of(r: pd.Series) -> dict[str, str]:
    """The verdict status columns of a row (computed when the row predates them)."""
    if all(isinstance(r.get(f"{v}_status"), str) and r.get(f"{v}_status") for v in VERDICTS):
        return {f"{v}_status": r[f"{v}_status"] for v in VERDICTS}
    return verdict_status(r.to_dict())


def patient_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per patient, in patient order: ``patient_id``, ``n_slices``, the medians of
    :data:`NUMBERS` over the patient's slices, each verdict (``yes``/``no``/``not computable``, or
    ``mixed`` when the slices disagree) with its status (``provisional`` when any slice's is), the
    review reasons of all slices ranked (each once), the level of the first slice, sex, and the
    first slice's overlay path."""
    out = []
    if not len(table):
        return out
    for pid, g in table.groupby("patient_id", sort=True):
        first = g.iloc[0]
        entry: dict[str, Any] = {"patient_id": str(pid), "n_slices": len(g), "sex": first.get("sex")
                                 if first.get("sex") in ("M", "F") else "",
                                 "overlay": first.get("overlay") or "", "level": level_text(first)}
        for key in NUMBERS:
            vals = np.array([_num(x) for x in g[key]]) if key in g else np.array([math.nan])
            vals = vals[np.isfinite(vals)]
            entry[key] = float(np.median(vals)) if len(vals) else math.nan
        statuses = [_status_of(r) for _, r in g.iterrows()]
        for v in VERDICTS:
            values = {str(x) for x in g[v]} if v in g else {"not computable"}
            entry[v] = values.pop() if len(values) == 1 else "mixed"
            states = {s[f"{v}_status"] for s in statuses}
            entry[f"{v}_status"] = ("provisional" if "provisional" in states or entry[v] == "mixed"
                                    else "final" if entry[v] in ("yes", "no") else "not computable")
        seen, reasons = set(), []
        for _, r in g.iterrows():
            for reason in ranked_reasons(r.get("review_reasons")):
                if reason.label not in seen:
                    seen.add(reason.label)
                    reasons.append(reason)
        reasons.sort(key=lambda x: SEVERITIES.index(x.severity))
        entry["reasons"] = reasons
        entry["severity"] = reasons[0].severity if reasons else ""
        out.append(entry)
    return out


def level_text(r: pd.Series) -> str:
    """How the slice's level is known, in a few words: ``L3 found, high confidence``,
    ``level not verified``, ``slice named by manifest``."""
    source = str(r.get("level_source") or "")
    conf = str(r.get("l3_confidence") or "").strip()
    if source == "localiser" or (conf and conf.lower() != "nan"):
        return f"L3 found, {conf} confidence" if conf and conf.lower() != "nan" else "L3 found"
    if source == "manifest":
        return "slice named by manifest"
    if source.startswith("as given"):
        return "level not verified"
    return source or "not recorded"


def verdict_counts(patients: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per verdict, how many patients: ``yes`` (final), ``yes`` provisional, ``no`` (final), ``no``
    provisional, ``mixed`` and ``not computable``."""
    rows = []
    for v in VERDICTS:
        c = {"name": VERDICT_NAMES[v].capitalize(), "yes": 0, "yes_p": 0, "no": 0, "no_p": 0, "mixed": 0, "nc": 0}
        for p in patients:
            val, st = p[v], p[f"{v}_status"]
            if val == "yes":
                c["yes_p" if st == "provisional" else "yes"] += 1
            elif val == "no":
                c["no_p" if st == "provisional" else "no"] += 1
            elif val == "mixed":
                c["mixed"] += 1
            else:
                c["nc"] += 1
        rows.append(c)
    return rows


SUMMARY_MEASURES = (("smi_cm2_m2", "SMI", "cm²/m²"), ("muscle_refined_hu_mean", "Muscle density", "HU"),
                    ("vat_refined_cm2", "VAT (refined)", "cm²"), ("sma_refined_cm2", "Muscle area (refined)", "cm²"))
"""The measures of the cohort summary: column, name, unit."""
CUTOFF_LINES = {"smi_cm2_m2": {"F": (41.0,), "M": (43.0, 53.0)}, "muscle_refined_hu_mean": {"F": (33.0, 41.0), "M": (33.0, 41.0)},
                "vat_refined_cm2": {"F": (100.0,), "M": (100.0,)}}
"""Cut-offs drawn as dashed lines on the strip plots (Martin 2013 SMI and density; VAT 100 cm²)."""


def medians(patients: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median (and interquartile range, n) of each :data:`SUMMARY_MEASURES` by sex and for all."""
    rows = []
    for key, name, unit in SUMMARY_MEASURES:
        row = {"name": name, "unit": unit}
        for group, label in (("F", "women"), ("M", "men"), ("", "all")):
            vals = np.array([p[key] for p in patients if (not group or p["sex"] == group)], float)
            vals = vals[np.isfinite(vals)]
            row[label] = (f"{np.median(vals):.1f} ({np.percentile(vals, 25):.1f}–{np.percentile(vals, 75):.1f}), n = {len(vals)}"
                          if len(vals) else "no values")
        rows.append(row)
    return rows


def strip_svg(patients: Sequence[dict[str, Any]], key: str, name: str, unit: str, width: int = 320) -> Markup:
    """An inline SVG strip plot of ``key`` per patient, one row for women and one for men (dots,
    the median as a bar, the cut-offs of :data:`CUTOFF_LINES` dashed); scales to its container."""
    groups = [(g, label, np.array([p[key] for p in patients if p["sex"] == g], float)) for g, label in
              (("F", "women"), ("M", "men"))]
    allv = np.concatenate([v[np.isfinite(v)] for _, _, v in groups] + [np.array([])])
    lines = [c for g in ("F", "M") for c in CUTOFF_LINES.get(key, {}).get(g, ())]
    if not len(allv):
        return Markup(f'<p class="note">{escape(name)}: no values.</p>')
    lo, hi = float(min([allv.min(), *lines])), float(max([allv.max(), *lines]))
    pad = (hi - lo) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    left, right, row_h, top = 52, 10, 26, 18
    h = top + row_h * 2 + 22

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (width - left - right)

    parts = [f'<svg class="strip" viewBox="0 0 {width} {h}" role="img" aria-label="{escape(name)} by sex">',
             f'<text x="0" y="12" class="t">{escape(name)} ({escape(unit)})</text>']
    rng = np.random.default_rng(0)
    for i, (g, label, vals) in enumerate(groups):
        y0 = top + i * row_h + row_h / 2
        parts.append(f'<text x="0" y="{y0 + 4:.1f}" class="l">{label}</text>')
        for c in CUTOFF_LINES.get(key, {}).get(g, ()):
            parts.append(f'<line x1="{x(c):.1f}" x2="{x(c):.1f}" y1="{y0 - row_h / 2 + 2:.1f}" y2="{y0 + row_h / 2 - 2:.1f}" '
                         'class="cut"/>')
        vals = vals[np.isfinite(vals)]
        jitter = rng.uniform(-row_h / 4, row_h / 4, len(vals))
        parts += [f'<circle cx="{x(v):.1f}" cy="{y0 + j:.1f}" r="2.2" class="{g}"/>' for v, j in zip(vals, jitter)]
        if len(vals):
            m = float(np.median(vals))
            parts.append(f'<line x1="{x(m):.1f}" x2="{x(m):.1f}" y1="{y0 - row_h / 2 + 1:.1f}" y2="{y0 + row_h / 2 - 1:.1f}" '
                         'class="med"/>')
    base = top + row_h * 2 + 2
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{base}" y2="{base}" class="axis"/>')
    for v in np.linspace(lo + pad, hi - pad, 4):
        parts.append(f'<text x="{x(v):.1f}" y="{base + 14}" class="tick">{v:.0f}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
