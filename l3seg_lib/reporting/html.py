"""HTML for clinicians from Jinja templates: per-patient pages, the batch index, the run index."""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup, escape
from PIL import Image

from l3seg_lib import __version__
from l3seg_lib.measures import VERDICTS as CONDITIONS
from l3seg_lib.names import atomic_path, safe_name
from l3seg_lib.reporting.cohort import SUMMARY_MEASURES, level_text, medians, patient_rows, strip_svg, verdict_counts
from l3seg_lib.reporting.reasons import VERDICT_NAMES, VERDICTS, ranked_reasons, verdict_status
from l3seg_lib.reporting.refusals import Refusal, input_name, plain_refusal, strip_paths

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


def _verdict_cell(verdict: Any, status: str) -> Markup:
    """A verdict for a table cell: a provisional one says so (amber, never the bold red of a finding)."""
    v = str(verdict if isinstance(verdict, str) else "not computable")
    if status == "provisional" and v in ("yes", "no", "mixed"):
        return Markup(f'<span class="prov">{escape(v)}<small> provisional</small></span>')
    return Markup(f'<span class="{_verdict_class(v)}">{escape(v)}</span>')


HEIGHT_HINT = ("height missing: add height_m (or height_cm) for this patient to the clinical CSV given with "
               "--clinical, or have the scanner record PatientSize in the DICOM header")
"""The one wording for an SMI (and a verdict needing it) that cannot be computed for want of height."""


def _smi_text(r: Mapping[str, Any]) -> str:
    """SMI to one decimal, or why it is not computable (and how to supply height)."""
    if _finite(r.get("smi_cm2_m2")):
        return _fmt(float(r.get("smi_cm2_m2")))
    if not _finite(r.get("height_m")):
        return "not computable: height missing (how to supply it: above)"
    return "not computable: no muscle area"


def _reason_text(reason: Any, r: Mapping[str, Any]) -> str:
    """A verdict's reason, the missing SMI worded as :data:`HEIGHT_HINT` when height is what is missing."""
    text = str(reason) if isinstance(reason, str) else ""
    if not _finite(r.get("height_m")) and re.match(r"^(SMI|height)\b.*missing|^height not available", text):
        rest = [w.strip() for w in re.sub(r"\s*missing.*$", "", text).split(",") if w.strip() not in ("SMI", "height")]
        return HEIGHT_HINT + (f"; also {', '.join(rest)} missing" if rest else "")
    return text


def _file_links(r: Mapping[str, Any], base_dir: Path, prefix: str) -> list[tuple[str, str]]:
    """(label, relative link) of a slice's files that exist: overlay, masks, DICOM SEG and SR."""
    links = []
    for key, label in (("overlay", "overlay picture"), ("mask_nifti", "mask (NIfTI, ITK-SNAP)"),
                       ("mask_tag", "mask (Slice-O-Matic .tag)"), ("dicom_seg", "DICOM SEG"), ("dicom_sr", "DICOM SR")):
        rel = r.get(key)
        if isinstance(rel, str) and rel and (base_dir / rel).is_file():
            links.append((label, prefix + rel))
    return links


def write_patient_html(path: Path, patient_id: str, rows: pd.DataFrame, base_dir: Path, meta: dict[str, Any],
                       images: Mapping[str, bytes] | None = None) -> Path:
    """One patient's page: overlays, the numbers with units, and the verdicts with reasons; a
    verdict a review flag doubts is marked provisional; links back to the index and to the slice's
    files (masks, SEG, SR).
    ``images``: overlay PNG bytes already in memory, by path relative to ``base_dir`` (others are read)."""
    first = rows.iloc[0]
    clinical = {
        "sex": {"M": "male", "F": "female"}.get(first.get("sex"), "not available"),
        "age": _fmt(first.get("age_years"), 0, "years"),
        "height": _fmt(first.get("height_m"), 2, "m") if _finite(first.get("height_m")) else "not available",
        "weight": _fmt(first.get("weight_kg"), 1, "kg"),
        "bmi": _fmt(first.get("bmi_kg_m2"), 1, "kg/m²"),
        "notes": [str(first[k]) for k in ("height_source", "weight_source", "age_source", "bmi_source")
                  if isinstance(first.get(k), str) and ("read as" in first[k] or "not used" in first[k])],
    }
    if not _finite(first.get("height_m")):
        clinical["notes"].append("SMI and the verdicts that need it are not computable: " + HEIGHT_HINT + ".")
    prefix = os.path.relpath(base_dir, path.parent).replace(os.sep, "/") + "/"
    slices = []
    for _, r in rows.iterrows():
        png = (images or {}).get(r["overlay"])
        png, factor = readable_png(png if png is not None else (base_dir / r["overlay"]).read_bytes())
        image = base64.b64encode(png).decode("ascii")
        measures = [
            ("Skeletal muscle area (refined)", _fmt(r["sma_refined_cm2"]), "cm²"),
            ("Skeletal muscle area (compartment, as painted)", _fmt(r["sma_cm2"]), "cm²"),
            ("Skeletal muscle index (SMI)", _smi_text(r), "cm²/m²"),
            ("Muscle density, mean ± SD (refined)",
             f"{_fmt(r['muscle_refined_hu_mean'])} ± {_fmt(r['muscle_refined_hu_sd'])}", "HU"),
            ("Muscle density, median (refined)", _fmt(r["muscle_refined_hu_median"]), "HU"),
            ("Muscle density, mean (whole compartment)", _fmt(r["muscle_hu_mean"]), "HU"),
            ("Intermuscular adipose tissue (IMAT)", _fmt(r["imat_cm2"]), "cm²"),
            ("Subcutaneous fat (SAT), refined / compartment", f"{_fmt(r['sat_refined_cm2'])} / {_fmt(r['sat_cm2'])}", "cm²"),
            ("Visceral fat (VAT), refined / compartment", f"{_fmt(r['vat_refined_cm2'])} / {_fmt(r['vat_cm2'])}", "cm²"),
            ("Total adipose tissue (SAT + VAT), refined", _fmt(r["tat_refined_cm2"]), "cm²"),
            ("VAT / SAT ratio (refined)", _fmt(r["vat_sat_ratio_refined"], 2), ""),
        ]
        status = verdict_status(r.to_dict())
        verdicts = [(v.label, _verdict_cell(r[v.column], status[f"{v.key}_status"]), status[f"{v.key}_status"],
                     _reason_text(r[v.reason_column], r)) for v in CONDITIONS]
        review = ranked_reasons(r.get("review_reasons")) if r.get("review_required") else []
        slices.append({"slice_index": int(r["slice_index"]), "source": input_name(r["source"]),
                       "location": None if pd.isna(r.get("slice_location_mm")) else f"{r['slice_location_mm']:.1f}",
                       "image": image, "pixel_caption": _pixel_caption(r, factor), "measures": measures, "verdicts": verdicts,
                       "provisional": status["verdicts_provisional_reason"],
                       "calibrated": bool(r.get("hu_calibrated", True)),
                       "series_notes": strip_paths(r.get("series_notes")) if isinstance(r.get("series_notes"), str) else "",
                       "level": _level(r, base_dir), "level_text": level_text(r),
                       "files": _file_links(r, base_dir, prefix), "review": review})
    html = _ENV.get_template("patient.html").render(
        title=f"L3 body composition - {patient_id}", patient_id=patient_id, clinical=clinical, slices=slices,
        index=prefix + "index.html", csv=prefix + "measurements.csv",
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


def thumbnail_path(overlay: str) -> str:
    """Where the index's thumbnail of an overlay lies (relative to the output folder)."""
    p = Path(overlay)
    return str(p.parent / "thumbs" / p.name)


_COHORT_COLUMNS = (  # key, header, kind (sort as number or text)
    ("thumb", "Overlay", ""), ("patient", "Patient", "t"), ("review", "Review (most severe first)", "n"),
    ("level", "L3 level", "t"), ("sex", "Sex", "t"), ("sarcopenia", "Sarcopenia", "t"),
    ("myosteatosis", "Myosteatosis", "t"), ("visceral_obesity", "Visceral obesity", "t"),
    ("sarcopenic_obesity", "Sarcopenic obesity", "t"), ("smi_cm2_m2", "SMI (cm²/m²)", "n"),
    ("sma_refined_cm2", "Muscle (cm²)", "n"), ("muscle_refined_hu_mean", "Muscle HU", "n"),
    ("imat_cm2", "IMAT (cm²)", "n"), ("sat_refined_cm2", "SAT (cm²)", "n"), ("vat_refined_cm2", "VAT (cm²)", "n"))


def _cohort_rows(patients: list[dict[str, Any]], base_dir: Path) -> list[dict[str, Any]]:
    """The cells of the cohort table, one row per patient, each cell with its sort value."""
    rows = []
    for p in patients:
        page = f"patients/{safe_name(p['patient_id'])}.html"
        thumb = thumbnail_path(p["overlay"]) if p["overlay"] else ""
        cells = {"thumb": (Markup(f'<a href="{escape(page)}"><img class="thumb" data-src="{escape(thumb)}" '
                                  f'alt="overlay of {escape(p["patient_id"])}"></a>') if thumb and (base_dir / thumb).is_file()
                           else Markup(""), ""),
                 "patient": (Markup(f'<a href="{escape(page)}">{escape(p["patient_id"])}</a>'
                                    + (f'<br><small>{p["n_slices"]} slices, median shown</small>' if p["n_slices"] > 1 else "")),
                             p["patient_id"])}
        sev = p["severity"]
        badge = "".join(f'<li class="sev-{r.severity}">{escape(r.label)}</li>' for r in p["reasons"])
        cells["review"] = (Markup(f'<ul class="reasons">{badge}</ul>') if badge else Markup('<span class="ok">none</span>'),
                           {"high": 3, "medium": 2, "low": 1}.get(sev, 0))
        cells["level"] = (p["level"], p["level"])
        cells["sex"] = (p["sex"] or "–", p["sex"])
        for v in VERDICTS:
            cells[v] = (_verdict_cell(p[v], p[f"{v}_status"]),
                        f"{p[v]}{' provisional' if p[f'{v}_status'] == 'provisional' else ''}")
        for key in ("smi_cm2_m2", "sma_refined_cm2", "muscle_refined_hu_mean", "imat_cm2", "sat_refined_cm2",
                    "vat_refined_cm2"):
            v = p[key]
            cells[key] = (_fmt(v) if _finite(v) else "–", f"{v:.3f}" if _finite(v) else "")
        search = " ".join([p["patient_id"], p["sex"] or "", p["level"], *(r.label for r in p["reasons"])]).lower()
        filters = {"sev": sev or "none", "sex": p["sex"] or "", "prov": "1" if any(
            p[f"{v}_status"] == "provisional" for v in VERDICTS) else "0",
            **{v: p[v] for v in VERDICTS}}
        rows.append({"cells": [{"html": cells[k][0], "v": cells[k][1], "label": head,
                                "num": kind == "n" and k != "review"} for k, head, kind in _COHORT_COLUMNS],
                     "search": search,
                     "filters": filters})
    return rows


PAGE_ROWS = 100
"""Rows of the cohort table shown at first (the others a click away; filters and search cover all):
a cohort of hundreds opens in well under 2 s."""


def write_index_html(path: Path, table: pd.DataFrame, errors: pd.DataFrame, validation: pd.DataFrame,
                     agreement: pd.DataFrame, meta: dict[str, Any], skipped: pd.DataFrame | None = None) -> Path:
    """The batch's index: a summary (counts per verdict, medians, distributions by sex), one
    sortable, filterable row per patient (the median of its slices when there are several) with its
    review reasons ranked, its level, a thumbnail and its page, the inputs not measured in plain
    words with the next step, and reference agreement. A static file: inline CSS and a little
    script, no network."""
    base_dir = Path(path).parent
    patients = patient_rows(table)
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
    refusals = [plain_refusal(e.get("source"), e.get("error"), bool(e.get("review")), e.get("picture") or "")
                for e in errors.astype(object).where(errors.notna(), None).to_dict("records")]
    files = [(name, name) for name in ("measurements.csv", "errors.csv", "skipped.csv", "validation.csv",
                                        "agreement.csv") if (base_dir / name).is_file() or name == "measurements.csv"]
    strips = [strip_svg(patients, key, name, unit) for key, name, unit in SUMMARY_MEASURES[:3]] if patients else []
    html = _ENV.get_template("index.html").render(
        title="L3 body composition - batch", columns=_COHORT_COLUMNS, page_rows=PAGE_ROWS, rows=_cohort_rows(patients, base_dir),
        n_rows=len(table), n_patients=len(patients), n_errors=len(errors),
        n_review=sum(1 for p in patients if p["severity"]), n_high=sum(1 for p in patients if p["severity"] == "high"),
        counts=verdict_counts(patients), medians=medians(patients) if patients else [], strips=strips,
        refusals=refusals, validation=val_rows, files=files, verdict_names=VERDICT_NAMES,
        skipped=[] if skipped is None else [{**k, "source": input_name(k.get("source")), "file": strip_paths(k.get("file")),
                                            "reason": strip_paths(k.get("reason"))} for k in skipped.to_dict("records")],
        version=__version__, generated=_now(), **meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_page(path, html)
    if refusals:
        write_refusals_html(base_dir / REFUSALS_PAGE, refusals)
    return path


REFUSALS_PAGE = "not_measured.html"
"""The page of the inputs that were not measured, beside ``index.html``."""


def write_refusals_html(path: Path, refusals: list[Refusal]) -> Path:
    """One card per input that was not measured: its name, what happened in plain words, the next
    step and the localiser's review picture (linked, not embedded); a way back to the index."""
    html = _ENV.get_template("refusals.html").render(title="L3 body composition - not measured", refusals=refusals,
                                                     version=__version__, generated=_now())
    _write_page(path, html)
    return path


def write_run_index_html(path: Path, run_id: str, params_path: Path, notebooks_dir: Path, data_source: str, seed: int,
                         links: list[tuple[str, str]], smoke_test: str | None = None) -> Path:
    """Index of a pipeline run's reports: one link (title, file name) per rendered notebook;
    ``smoke_test``: the banner of a smoke-test run."""
    html = _ENV.get_template("run_index.html").render(
        title=f"l3seg run {run_id}", run_id=run_id, params_path=Path(params_path).name,
        notebooks_dir=f"{Path(notebooks_dir).name}/",
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
