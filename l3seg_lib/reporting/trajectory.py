"""Serial scans on pages: a patient's trajectory picture (one panel per measure: dates, values with
95 % error bars, cut-off lines), the timeline page (``patients/<id>_timeline.html``: the picture,
the overlays of each time point side by side at one scale, the changes with their uncertainty and
flags) and the cohort's changes page (``changes.html``, sortable). Drawn from plain tables (the
time points and ``changes.csv`` of :mod:`l3seg_lib.measurement.serial`)."""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

import jinja2

from l3seg_lib import __version__
from l3seg_lib.names import atomic_path

ENV = jinja2.Environment(loader=jinja2.PackageLoader("l3seg_lib.reporting", "templates"),
                         autoescape=jinja2.select_autoescape(["html"]))

PANEL_IN = (3.6, 2.4)
"""Size of one measure's panel (inches)."""
SIDE_BY_SIDE_PX = 300
"""Display width of the widest time point's overlay; the others are shown at the same mm per pixel."""


def fmt(value: Any, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals; ``not available`` when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "not available"
    return f"{value:.{digits}f}" if isinstance(value, (int, float, np.floating)) else str(value)


def write_page(path: Path, html: str) -> Path:
    """Write a page under a temporary name, renamed into place when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path


def now() -> str:
    """The current local time as ``YYYY-MM-DD HH:MM``."""
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def trajectory_png(points: pd.DataFrame, measures: Sequence[tuple[str, str, str]],
                   half_widths: Mapping[str, Sequence[float]], cutoffs: Mapping[str, Sequence[tuple[float, str]]],
                   title: str = "", dpi: int = 100) -> bytes:
    """PNG of one panel per measure ``(column, label, unit)``: the values of ``points`` (one row per
    time point, ``date`` YYYY-MM-DD) against their dates, each with its error bar (``half_widths``:
    per column, one 95 % half-width per point) and the cut-off lines (value, label)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import matplotlib.dates as mdates

    n = len(measures)
    cols = 3 if n > 4 else n
    nrows = -(-n // cols)
    fig = Figure(figsize=(PANEL_IN[0] * cols, PANEL_IN[1] * nrows + (0.4 if title else 0)), dpi=dpi)
    FigureCanvasAgg(fig)
    dates = pd.to_datetime(points["date"]).to_numpy()
    for k, (column, label, unit) in enumerate(measures):
        ax = fig.add_subplot(nrows, cols, k + 1)
        y = pd.to_numeric(points[column], errors="coerce").to_numpy(float)
        err = np.asarray(half_widths.get(column, [np.nan] * len(y)), float)
        ax.errorbar(dates, y, yerr=np.where(np.isfinite(err), err, 0), fmt="o-", color="#333", ecolor="#c0392b",
                    capsize=3, lw=1.2, ms=4)
        for value, text in cutoffs.get(column, []):
            ax.axhline(value, color="#1f77b4", ls="--", lw=1)
            ax.annotate(text, (0.01, value), xycoords=("axes fraction", "data"), fontsize=6.5, color="#1f77b4",
                        va="bottom")
        ax.set_title(f"{label} ({unit})", fontsize=8.5)
        ax.tick_params(labelsize=7)
        if len(dates) <= 4:
            ax.set_xticks(dates)
        else:
            ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=4))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
        ax.grid(alpha=0.3)
        ax.margins(x=0.15)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _same_scale(pictures: list[tuple[bytes, float]]) -> list[tuple[str, int]]:
    """(base64 PNG, display width px) of overlays with their pixel spacing (mm): one mm per pixel
    for all, the widest field of view shown :data:`SIDE_BY_SIDE_PX` wide."""
    fovs = []
    for data, spacing in pictures:
        w = Image.open(io.BytesIO(data)).size[0]
        fovs.append(w * spacing if np.isfinite(spacing) and spacing > 0 else float(w))
    widest = max(fovs) if fovs else 1.0
    return [(base64.b64encode(data).decode("ascii"), max(1, round(SIDE_BY_SIDE_PX * fov / widest)))
            for (data, _), fov in zip(pictures, fovs)]


def write_patient_timeline(path: Path, patient_id: str, points: pd.DataFrame, changes: pd.DataFrame,
                           picture: bytes, overlays: list[tuple[bytes, float]], notes: list[str],
                           error_lines: list[str], citations: str, meta: Mapping[str, Any]) -> Path:
    """A patient's timeline page: the trajectory ``picture``, the ``overlays`` (PNG bytes, pixel
    spacing mm) of each time point of ``points`` side by side at one scale, the ``changes`` rows
    with their uncertainty and flags, the ``notes`` (studies not ordered, series chosen), the
    error model and the references."""
    shown = _same_scale(overlays)
    tps = [{"date": r["date"], "series": r["series"], "slices": r["slices"], "rule": r["value_rule"],
            "image": img, "width": width, "review": bool(r.get("review_required"))}
           for (_, r), (img, width) in zip(points.iterrows(), shown)]
    rows = []
    for _, c in changes.iterrows():
        pct = "" if pd.isna(c["change_pct_vs_baseline"]) else f" ({c['change_pct_vs_baseline']:+.1f} %)"
        ppct = "" if pd.isna(c["change_pct_vs_previous"]) else f" ({c['change_pct_vs_previous']:+.1f} %)"
        rate = c["change_pct_per_100d_vs_baseline"]
        rows.append({"date": c["date"], "days": c["days_since_baseline"], "label": c["label"], "unit": c["unit"],
                     "value": fmt(c["value"]), "baseline": fmt(c["baseline_value"]),
                     "change": f"{c['change_vs_baseline']:+.1f}{pct} ± {fmt(c['uncertainty_vs_baseline'])}",
                     "rate": "" if pd.isna(rate) else f"{rate:+.1f} %",
                     "previous": f"{c['change_vs_previous']:+.1f}{ppct} ± {fmt(c['uncertainty_vs_previous'])}",
                     "beyond": c["beyond_error_vs_baseline"]})
    flags = (changes.drop_duplicates("time_point")[["date", "muscle_loss", "muscle_loss_reason", "cachexia",
                                                    "cachexia_reason", "sarcopenia_course"]].to_dict("records")
             if len(changes) else [])
    html = ENV.get_template("serial.html").render(
        title=f"L3 body composition over time - {patient_id}", patient_id=patient_id,
        picture=base64.b64encode(picture).decode("ascii"), timepoints=tps, rows=rows, flags=flags, notes=notes,
        error_lines=error_lines, serial_citations=citations, version=__version__, generated=now(), **meta)
    return write_page(path, html)


COHORT_COLUMNS = (("sma_refined_cm2", "Muscle area"), ("smi_cm2_m2", "SMI"), ("muscle_refined_hu_mean", "Density"),
                  ("imat_cm2", "IMAT"), ("sat_refined_cm2", "SAT"), ("vat_refined_cm2", "VAT"))
"""Measures of the cohort's changes page (% vs baseline for areas, HU for density)."""


def write_changes_index(path: Path, changes: pd.DataFrame, links: Mapping[str, str], meta: Mapping[str, Any]
                        ) -> Path:
    """The cohort's changes page: one row per patient and follow-up, each measure's change against
    the baseline (% for areas, HU for density; bold when beyond the error), the flags, sortable by
    any column; ``links``: patient id -> its timeline page (relative to ``path``)."""
    rows = []
    groups = changes.groupby(["patient_id", "time_point"], sort=True) if len(changes) else []
    for (pid, tp), grp in groups:
        by = grp.set_index("measure")
        first = grp.iloc[0]
        cells = []
        for column, _ in COHORT_COLUMNS:
            c = by.loc[column] if column in by.index else None
            if c is None:
                cells.append(("", "", False))
                continue
            v = c["change_pct_vs_baseline"] if column != "muscle_refined_hu_mean" else c["change_vs_baseline"]
            unit = " HU" if column == "muscle_refined_hu_mean" else " %"
            cells.append(("" if pd.isna(v) else f"{v:+.1f}{unit}", "" if pd.isna(v) else f"{v:.4f}",
                          c["beyond_error_vs_baseline"] == "yes"))
        rows.append({"patient": pid, "link": links.get(str(pid), ""), "date": first["date"],
                     "days": int(first["days_since_baseline"]), "cells": cells, "muscle_loss": first["muscle_loss"],
                     "cachexia": first["cachexia"], "sarcopenia": first["sarcopenia_course"]})
    html = ENV.get_template("changes.html").render(
        title="L3 body composition - changes over time", rows=rows, columns=[c[1] for c in COHORT_COLUMNS],
        version=__version__, generated=now(), **meta)
    return write_page(path, html)
