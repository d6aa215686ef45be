"""HTML for clinicians from Jinja templates: per-patient pages, the batch index, the run index."""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import escape
from PIL import Image

from l3seg_lib import __version__
from l3seg_lib.measures import MYOSTEATOSIS, SARCOPENIA, VERDICTS, VISCERAL_OBESITY
from l3seg_lib.names import atomic_path, safe_name

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("l3seg_lib.reporting", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)


def _write_page(path: Path, html: str) -> None:
    """Write a page under a temporary name, renamed into place when complete (never a torn page)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")


def _fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    """``value`` with ``digits`` decimals and ``unit``; ``not available`` for None or non-finite values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "not available"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"
    return str(value)


READABLE_PX = 512
"""Smallest side, in screen pixels, of a picture on a patient page: coarse scans are upsampled."""


def readable_png(data: bytes, min_side: int = READABLE_PX) -> tuple[bytes, int]:
    """PNG ``data`` enlarged by a whole factor (nearest neighbour: every CT pixel stays a visible
    square, nothing is invented) until its smaller side is at least ``min_side``; the new PNG bytes
    and the factor (1: unchanged)."""
    with Image.open(io.BytesIO(data)) as img:
        side = min(img.size)
        factor = max(1, math.ceil(min_side / max(side, 1)))
        if factor == 1:
            return data, 1
        big = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    return buf.getvalue(), factor


def _pixel_caption(r: Mapping[str, Any], factor: int) -> str:
    """The true pixel size of a slice's overlay, and how much it was enlarged for the page."""
    row, col = r.get("pixel_spacing_row_mm"), r.get("pixel_spacing_col_mm")
    if row is None or col is None or pd.isna(row) or pd.isna(col):
        size = "pixel size not recorded"
    elif abs(float(row) - float(col)) < 1e-3:
        size = f"CT pixel {float(row):.2f} mm"
    else:
        size = f"CT pixel {float(row):.2f} × {float(col):.2f} mm (rows × columns)"
    return size + (f"; shown enlarged {factor}× (each CT pixel drawn as a {factor}×{factor} square)" if factor > 1 else "")


def _finite(value: Any) -> bool:
    """Whether ``value`` is a finite number."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def not_computable(n: int | None) -> str:
    """What a clinician page says instead of NaN for a statistic over ``n`` patients or slices."""
    return f"not computable with n = {n}" if n is not None else "not computable"


def _stat(value: Any, n: int | None, digits: int = 1) -> str:
    """A statistic with ``digits`` decimals, or :func:`not_computable` with its ``n`` when it is NaN."""
    return f"{float(value):.{digits}f}" if _finite(value) else not_computable(n)


def _now() -> str:
    """The current local time as ``YYYY-MM-DD HH:MM``."""
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def _verdict_class(v: str) -> str:
    """CSS class of a verdict: ``yes``, ``no``, or ``nc`` (not computable) for anything else."""
    return {"yes": "yes", "no": "no"}.get(v, "nc")


def write_patient_html(path: Path, patient_id: str, rows: pd.DataFrame, base_dir: Path, meta: dict[str, Any],
                       images: Mapping[str, bytes] | None = None) -> Path:
    """One patient's page: overlays, the numbers with units, and the verdicts with reasons.
    ``images``: overlay PNG bytes already in memory, by path relative to ``base_dir`` (others are read)."""
    first = rows.iloc[0]
    clinical = {
        "sex": {"M": "male", "F": "female"}.get(first.get("sex"), "not available"),
        "age": _fmt(first.get("age_years"), 0, "years"),
        "height": _fmt(first.get("height_m"), 2, "m"),
        "weight": _fmt(first.get("weight_kg"), 1, "kg"),
        "bmi": _fmt(first.get("bmi_kg_m2"), 1, "kg/m²"),
        "notes": [str(first[k]) for k in ("height_source", "weight_source", "age_source", "bmi_source")
                  if isinstance(first.get(k), str) and ("read as" in first[k] or "not used" in first[k])],
    }
    slices = []
    for _, r in rows.iterrows():
        png = (images or {}).get(r["overlay"])
        png, factor = readable_png(png if png is not None else (base_dir / r["overlay"]).read_bytes())
        image = base64.b64encode(png).decode("ascii")
        measures = [
            ("Skeletal muscle area (compartment)", _fmt(r["sma_cm2"]), "cm²"),
            ("Skeletal muscle area (refined)", _fmt(r["sma_refined_cm2"]), "cm²"),
            ("Skeletal muscle index (SMI)", _fmt(r.get("smi_cm2_m2")), "cm²/m²"),
            ("Muscle density, mean ± SD (refined)",
             f"{_fmt(r['muscle_refined_hu_mean'])} ± {_fmt(r['muscle_refined_hu_sd'])}", "HU"),
            ("Muscle density, median (refined)", _fmt(r["muscle_refined_hu_median"]), "HU"),
            ("Muscle density, mean (whole compartment)", _fmt(r["muscle_hu_mean"]), "HU"),
            ("Intermuscular adipose tissue (IMAT)", _fmt(r["imat_cm2"]), "cm²"),
            ("Subcutaneous fat (SAT), compartment / refined", f"{_fmt(r['sat_cm2'])} / {_fmt(r['sat_refined_cm2'])}", "cm²"),
            ("Visceral fat (VAT), compartment / refined", f"{_fmt(r['vat_cm2'])} / {_fmt(r['vat_refined_cm2'])}", "cm²"),
            ("Total adipose tissue (SAT + VAT), refined", _fmt(r["tat_refined_cm2"]), "cm²"),
            ("VAT / SAT ratio (refined)", _fmt(r["vat_sat_ratio_refined"], 2), ""),
        ]
        verdicts = [(v.label, r[v.column], _verdict_class(r[v.column]), r[v.reason_column]) for v in VERDICTS]
        slices.append({"slice_index": int(r["slice_index"]), "source": r["source"],
                       "location": None if pd.isna(r.get("slice_location_mm")) else f"{r['slice_location_mm']:.1f}",
                       "image": image, "pixel_caption": _pixel_caption(r, factor), "measures": measures, "verdicts": verdicts,
                       "calibrated": bool(r.get("hu_calibrated", True)),
                       "series_notes": r.get("series_notes") if isinstance(r.get("series_notes"), str) else "",
                       "level": _level(r, base_dir),
                       "review": [x for x in str(r.get("review_reasons") or "").split("; ") if x]
                       if r.get("review_required") else []})
    html = _ENV.get_template("patient.html").render(
        title=f"L3 body composition - {patient_id}", patient_id=patient_id, clinical=clinical, slices=slices,
        version=__version__, generated=_now(), **meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_page(path, html)
    return path


def _level(r: pd.Series, base_dir: Path) -> dict[str, Any] | None:
    """How the slice was chosen, with the localiser's picture (base64) when it found it."""
    picture = r.get("localizer_picture")
    if not isinstance(picture, str) or not picture:
        method = r.get("l3_method")
        return {"method": method, "image": None} if isinstance(method, str) and method else None
    return {"method": r.get("l3_method"), "confidence": r.get("l3_confidence"), "range": r.get("l3_range"),
            "notes": r.get("l3_notes") if isinstance(r.get("l3_notes"), str) else "",
            "image": base64.b64encode(readable_png((base_dir / picture).read_bytes())[0]).decode("ascii")}


def write_index_html(path: Path, table: pd.DataFrame, errors: pd.DataFrame, validation: pd.DataFrame,
                     agreement: pd.DataFrame, meta: dict[str, Any], skipped: pd.DataFrame | None = None) -> Path:
    """Batch overview: one line per slice with links, the errors, and reference agreement."""
    shown = (SARCOPENIA, MYOSTEATOSIS, VISCERAL_OBESITY)  # the verdicts the overview shows
    headers = ["Review", "Patient", "Slice", "Sex", "SMA (cm²)", "SMI (cm²/m²)", "Muscle HU", "SAT (cm²)", "VAT (cm²)",
               *(v.label for v in shown)]
    rows = []
    for _, r in table.iterrows():
        link = f'<a href="patients/{safe_name(str(r["patient_id"]))}.html">{escape(str(r["patient_id"]))}</a>'
        flag = (f'<span class="yes" title="{escape(str(r.get("review_reasons") or ""))}">review</span>'
                if r.get("review_required") else "")
        rows.append([flag, link, int(r["slice_index"]), r.get("sex") or "–", _fmt(r["sma_refined_cm2"]), _fmt(r.get("smi_cm2_m2")),
                     _fmt(r["muscle_refined_hu_mean"]), _fmt(r["sat_refined_cm2"]), _fmt(r["vat_refined_cm2"]),
                     *(r[v.column] for v in shown)])
    val_rows = []
    if len(validation):
        for _, a in agreement.iterrows():
            t = a["tissue"]
            d = validation[f"dice_{t}"]
            n = int(a["n"])
            dice = _stat(d.mean(), n, 3) + (f" ({_stat(d.std(ddof=1), n, 3)})" if len(d) > 1 else "")
            loa = (f"{_fmt(a['loa_low'])} to {_fmt(a['loa_high'])}" if _finite(a["loa_low"]) and _finite(a["loa_high"])
                   else not_computable(n))
            val_rows.append({"tissue": t, "dice": dice, "err": _stat(validation[f"area_err_{t}_cm2"].mean(), n),
                             "bias": _stat(a["bias"], n), "loa": loa, "n": n})
    html = _ENV.get_template("index.html").render(
        title="L3 body composition - batch", headers=headers, rows=rows,
        n_rows=len(table), n_patients=table["patient_id"].nunique() if len(table) else 0, n_errors=len(errors),
        errors=errors.astype(object).where(errors.notna(), None).to_dict("records"), validation=val_rows,
        skipped=[] if skipped is None else skipped.to_dict("records"), version=__version__, generated=_now(), **meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_page(path, html)
    return path


def write_run_index_html(path: Path, run_id: str, params_path: Path, notebooks_dir: Path, data_source: str, seed: int,
                         links: list[tuple[str, str]], smoke_test: str | None = None) -> Path:
    """Index of a pipeline run's reports: one link (title, file name) per rendered notebook;
    ``smoke_test``: the banner of a smoke-test run."""
    html = _ENV.get_template("run_index.html").render(
        title=f"l3seg run {run_id}", run_id=run_id, params_path=str(params_path), notebooks_dir=str(notebooks_dir),
        data_source=data_source, seed=seed, links=links, version=__version__, generated=_now(), smoke_test=smoke_test)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_page(path, html)
    return path


def write_finetune_html(path: Path, before: pd.DataFrame, after: pd.DataFrame, manifest: str, n_slices: int,
                        n_patients: int, epochs: int) -> Path:
    """Before-and-after page of ``l3seg finetune``: Dice and area error per tissue on the held-out
    patients."""
    rows = []
    for t, name in (("muscle", "Skeletal muscle"), ("sat", "SAT"), ("vat", "VAT")):
        rows.append({"tissue": name, "before": _fmt(before[f"dice_{t}"].mean(), 3), "after": _fmt(after[f"dice_{t}"].mean(), 3),
                     "err_before": _fmt(before[f"area_err_{t}_pct"].abs().mean(), 1, "%"),
                     "err_after": _fmt(after[f"area_err_{t}_pct"].abs().mean(), 1, "%")})
    html = _ENV.get_template("finetune.html").render(
        title="l3seg fine-tuning", rows=rows, manifest=manifest, n_slices=n_slices, n_patients=n_patients,
        epochs=epochs, n_test=before["patient_id"].nunique(), n_test_slices=len(before), version=__version__,
        generated=_now())
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_page(path, html)
    return path


def write_remeasure_html(path: Path, before: pd.DataFrame, after: pd.DataFrame, audit: pd.DataFrame,
                         compared: dict[str, str], verdicts: tuple[str, ...]) -> Path:
    """Before and after ``l3seg remeasure``: one row per edited slice, verdict changes highlighted,
    and the audit lines."""
    rows = []
    edited = after[after.get("mask_edited", pd.Series(dtype=object)).notna()] if "mask_edited" in after else after.iloc[0:0]
    for idx, a in edited.iterrows():
        b = before.loc[idx]
        cells = [escape(str(a["patient_id"])), int(a["slice_index"])]
        for key in compared:
            cells.append(f"{_fmt(b.get(key))} → {_fmt(a.get(key))}")
        for v in verdicts:
            changed = b.get(v) != a.get(v)
            cells.append(f'<span class="{"yes" if changed else "nc"}">{escape(str(b.get(v)))} → {escape(str(a.get(v)))}</span>')
        rows.append(cells)
    headers = ["Patient", "Slice", *compared.values(), *(v.replace("_", " ") for v in verdicts)]
    html = _ENV.get_template("remeasure.html").render(
        title="L3 body composition - remeasured", headers=headers, rows=rows, audit=audit.to_dict("records"),
        n_edited=len(edited), n_changed=len(audit), version=__version__, generated=_now())
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_page(path, html)
    return path
