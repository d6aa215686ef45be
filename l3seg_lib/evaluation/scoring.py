"""Scores of predicted labels against reference labels on CT slices, and models compared by them.

Functions on arrays and tables only (no files, no data sets: those are the research harness's,
``l3seg_lab/realct.py``).

Per slice (:func:`score_slice`), from the HU image, the predicted labels and the reference
(classes 0-3):

- **raw** Dice per tissue (the labels as predicted) and **refined** Dice per tissue (the prediction
  after keeping only each class's pixels inside that class's HU range, :func:`refine_labels`, which
  is :func:`l3seg_lib.tissues.refined_mask` per class; the ranges are the project's Alberta-protocol
  ranges, :data:`HU_RANGES`, the ones ``measure`` uses for its ``*_refined_cm2`` areas). The
  reference itself is never refined;
- areas in cm2 of the refined prediction and of the reference, and the area error (prediction -
  reference) in cm2 and in % of the reference (also for the raw prediction).

Per model and set (:func:`summarize`): mean Dice (raw, refined), its slice-to-slice SD and standard
error SE = SD / sqrt(n) (the "noise" of the mean, n = slices), and the mean area error in %.

Model against baseline (:func:`compare_models`): per set and tissue the difference of the mean
refined Dice, paired by slice. **Noise** of that difference = max(0.005, 1.96 x SD of the paired
per-slice differences / sqrt(n)) (the half-width of a 95 % normal interval of the mean paired
difference, floored at 0.005 Dice because 3 slices can agree by chance almost exactly); a
**regression** is a difference < -noise.

Model metadata (:func:`recorded_real_ct`, :func:`check_recorded`, :func:`real_ct_metadata`): the
figures an ONNX model file records about itself on real CT sets (key ``l3seg.real_ct``, JSON, see
:func:`real_ct_metadata`; the older free-text ``l3seg.real_ct_accuracy`` is parsed as well) and a
comparison of measured against recorded figures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from l3seg_lib.inference.model_file import ModelSpec
from l3seg_lib.metrics import areas_cm2, confusion_matrix, dice_iou
from l3seg_lib.tissues import CLASSES, DEFAULT_HU_RANGES, TISSUES, refined_mask

__all__ = [
    "HU_RANGES", "NOISE_FLOOR", "TISSUE_TITLES", "area_error", "check_recorded", "compare_models",
    "detail_table", "dice_per_tissue", "is_regression", "markdown_table", "real_ct_metadata",
    "recorded_real_ct", "refine_labels", "regression_lines", "regression_noise", "score_slice", "summarize",
]

HU_RANGES: dict[str, tuple[float, float]] = {t: DEFAULT_HU_RANGES[t] for t in TISSUES}
"""HU range (inclusive, HU) per tissue for the refinement: the defaults of :mod:`l3seg_lib.tissues`,
which ``measure`` uses (muscle -29..150, SAT -190..-30, VAT -150..-50)."""

NOISE_FLOOR = 0.005
"""Smallest noise (Dice) of a model-vs-baseline difference: smaller differences are never regressions."""
NOISE_Z = 1.96
"""Normal quantile of the noise (a 95 % two-sided interval)."""
TISSUE_TITLES = {"muscle": "muscle", "sat": "SAT", "vat": "VAT"}


# --------------------------------------------------------------------------------------------
# per-slice scores


def refine_labels(hu: np.ndarray, labels: np.ndarray,
                  hu_ranges: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """A copy of ``labels`` (classes 0-3) keeping each tissue's pixels only where ``hu`` (HU) lies
    inside that tissue's inclusive HU range (:func:`l3seg_lib.tissues.refined_mask`; ``hu_ranges``
    completed with the defaults, :data:`HU_RANGES`); the rest become 0."""
    if hu.shape != labels.shape:
        raise ValueError(f"image {hu.shape} and labels {labels.shape} differ in shape")
    out = np.zeros(np.shape(labels), np.uint8)
    for t in CLASSES:
        out[refined_mask(labels, hu, t.key, hu_ranges)] = t.label
    return out


def dice_per_tissue(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Dice (0-1) of each tissue (NaN where the tissue is absent from both)."""
    dice, _ = dice_iou(confusion_matrix(pred, ref))
    return {t: float(dice[c]) for c, t in enumerate(TISSUES, start=1)}


def area_error(pred_cm2: float, ref_cm2: float) -> tuple[float, float]:
    """(prediction - reference) in cm2 and in % of the reference (NaN % when the reference is 0)."""
    err = float(pred_cm2) - float(ref_cm2)
    return err, (100.0 * err / float(ref_cm2) if ref_cm2 > 0 else float("nan"))


def score_slice(hu: np.ndarray, pred: np.ndarray, ref: np.ndarray, spacing_mm: tuple[float, float],
                hu_ranges: Mapping[str, tuple[float, float]] | None = None) -> dict[str, float]:
    """Scores of one slice: ``dice_raw_<t>``, ``dice_refined_<t>`` (0-1), ``area_ref_<t>_cm2``,
    ``area_pred_<t>_cm2`` (refined prediction) and ``area_pred_raw_<t>_cm2``, ``area_err_<t>_cm2``
    and ``area_err_<t>_pct`` (refined prediction - reference), ``area_err_raw_<t>_pct``, and
    ``dice_refined_mean`` over the tissues. ``spacing_mm`` is the (row, col) pixel size in mm."""
    refined = refine_labels(hu, pred, hu_ranges)
    raw_d, ref_d = dice_per_tissue(pred, ref), dice_per_tissue(refined, ref)
    a_raw, a_ref, a_true = areas_cm2(pred, spacing_mm), areas_cm2(refined, spacing_mm), areas_cm2(ref, spacing_mm)
    out: dict[str, float] = {}
    for c, t in enumerate(TISSUES, start=1):
        out[f"dice_raw_{t}"] = raw_d[t]
        out[f"dice_refined_{t}"] = ref_d[t]
    for c, t in enumerate(TISSUES, start=1):
        err, pct = area_error(a_ref[c], a_true[c])
        _, pct_raw = area_error(a_raw[c], a_true[c])
        out.update({f"area_ref_{t}_cm2": float(a_true[c]), f"area_pred_{t}_cm2": float(a_ref[c]),
                    f"area_pred_raw_{t}_cm2": float(a_raw[c]), f"area_err_{t}_cm2": err,
                    f"area_err_{t}_pct": pct, f"area_err_raw_{t}_pct": pct_raw})
    vals = [ref_d[t] for t in TISSUES]
    out["dice_refined_mean"] = float(np.nanmean(vals)) if not np.all(np.isnan(vals)) else float("nan")
    return out


# --------------------------------------------------------------------------------------------
# aggregation and comparison


def summarize(per_slice: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, set): ``n`` slices; per tissue the mean, SD and SE (= SD / sqrt(n)) of
    the raw and refined Dice, the mean area error in % (refined and raw) and the mean |area
    error| in %."""
    rows = []
    for (model, set_name), g in per_slice.groupby(["model", "set"], sort=False):
        row: dict[str, Any] = {"model": model, "set": set_name, "n": len(g)}
        for t in TISSUES:
            for kind in ("raw", "refined"):
                v = g[f"dice_{kind}_{t}"].dropna()
                sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
                row[f"dice_{kind}_{t}"] = float(v.mean()) if len(v) else float("nan")
                row[f"dice_{kind}_{t}_sd"] = sd
                row[f"dice_{kind}_{t}_se"] = sd / np.sqrt(len(v)) if len(v) > 1 else float("nan")
            row[f"area_err_{t}_pct"] = float(g[f"area_err_{t}_pct"].mean())
            row[f"area_abs_err_{t}_pct"] = float(g[f"area_err_{t}_pct"].abs().mean())
            row[f"area_err_raw_{t}_pct"] = float(g[f"area_err_raw_{t}_pct"].mean())
            row[f"area_ref_{t}_cm2"] = float(g[f"area_ref_{t}_cm2"].mean())
            row[f"area_pred_{t}_cm2"] = float(g[f"area_pred_{t}_cm2"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def regression_noise(diffs: Sequence[float] | np.ndarray, floor: float = NOISE_FLOOR, z: float = NOISE_Z) -> float:
    """Noise (Dice) of the mean of paired per-slice differences: max(``floor``, ``z`` x SD /
    sqrt(n)); ``floor`` alone for fewer than 2 differences."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return float(floor)
    return float(max(floor, z * d.std(ddof=1) / np.sqrt(d.size)))


def is_regression(mean_diff: float, noise: float) -> bool:
    """A regression: the candidate's mean is below the baseline's by more than the noise."""
    return bool(np.isfinite(mean_diff) and mean_diff < -noise)


def compare_models(per_slice: pd.DataFrame, baseline: str, metric: str = "dice_refined",
                   floor: float = NOISE_FLOOR) -> pd.DataFrame:
    """Each other model against ``baseline``, per set and tissue, paired by slice: the baseline's
    and candidate's mean ``metric``, their difference (candidate - baseline), its noise
    (:func:`regression_noise`), n and ``regression`` (difference < -noise)."""
    rows = []
    base = per_slice[per_slice["model"] == baseline]
    if base.empty:
        raise ValueError(f"baseline model {baseline!r} has no scores")
    for model in [m for m in per_slice["model"].unique() if m != baseline]:
        cand = per_slice[per_slice["model"] == model]
        for set_name in cand["set"].unique():
            a = base[base["set"] == set_name].set_index("slice_id")
            b = cand[cand["set"] == set_name].set_index("slice_id")
            ids = a.index.intersection(b.index)
            for t in TISSUES:
                col = f"{metric}_{t}"
                d = (b.loc[ids, col] - a.loc[ids, col]).to_numpy(dtype=float)
                ok = np.isfinite(d)
                mean_diff = float(d[ok].mean()) if ok.any() else float("nan")
                noise = regression_noise(d, floor)
                rows.append({"candidate": model, "baseline": baseline, "set": set_name, "tissue": t,
                             "metric": metric, "n": int(ok.sum()),
                             "baseline_mean": float(a.loc[ids, col].mean()), "candidate_mean": float(b.loc[ids, col].mean()),
                             "diff": mean_diff, "noise": noise, "regression": is_regression(mean_diff, noise)})
    return pd.DataFrame(rows, columns=["candidate", "baseline", "set", "tissue", "metric", "n", "baseline_mean",
                                       "candidate_mean", "diff", "noise", "regression"])


def regression_lines(comparison: pd.DataFrame) -> list[str]:
    """One ``REGRESSION ...`` line per regressing (candidate, set, tissue)."""
    return [f"REGRESSION {r.candidate} vs {r.baseline}: {r.set} {TISSUE_TITLES[r.tissue]} {r.metric} "
            f"{r.candidate_mean:.3f} vs {r.baseline_mean:.3f} (diff {r.diff:+.3f} < -noise {r.noise:.3f}, n={r.n})"
            for r in comparison.itertuples() if r.regression]


def markdown_table(summary: pd.DataFrame, sets: Sequence[str] | None = None) -> str:
    """Results table (docs/results.md): one row per model; per set the refined Dice of each tissue (mean +- SE) and
    the muscle area error in % (refined prediction vs reference)."""
    sets = list(sets or summary["set"].unique())
    head = ["model"]
    for s in sets:
        head += [f"{s} {TISSUE_TITLES[t]} Dice" for t in TISSUES] + [f"{s} muscle area err %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for model, g in summary.groupby("model", sort=False):
        cells = [str(model)]
        for s in sets:
            r = g[g["set"] == s]
            if r.empty:
                cells += ["-"] * (len(TISSUES) + 1)
                continue
            r = r.iloc[0]
            for t in TISSUES:
                se = r[f"dice_refined_{t}_se"]
                cells.append(f"{r[f'dice_refined_{t}']:.3f}" + (f" ± {se:.3f}" if np.isfinite(se) else ""))
            cells.append(f"{r['area_err_muscle_pct']:+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    ns = summary.drop_duplicates("set").set_index("set")["n"]
    lines.append("")
    lines.append("Refined Dice (prediction kept within the Alberta HU ranges), mean ± SE over slices "
                 f"({', '.join(f'{s}: n = {int(ns[s])}' for s in sets if s in ns)}); "
                 "muscle area error = (refined predicted - reference) / reference.")
    return "\n".join(lines)


def detail_table(summary: pd.DataFrame) -> str:
    """Markdown: per model and set, raw and refined Dice and the area error (%) of each tissue."""
    head = ["model", "set", "n"] + [f"{TISSUE_TITLES[t]} {k}" for t in TISSUES
                                    for k in ("Dice raw", "Dice refined", "area err %")]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in summary.itertuples(index=False):
        r = r._asdict()
        cells = [str(r["model"]), str(r["set"]), str(r["n"])]
        for t in TISSUES:
            cells += [f"{r[f'dice_raw_{t}']:.3f}", f"{r[f'dice_refined_{t}']:.3f}", f"{r[f'area_err_{t}_pct']:+.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# figures recorded in a model file


def real_ct_metadata(summary: pd.DataFrame, model: str, digits: int = 3) -> dict[str, Any]:
    """The figures of ``model`` in ``summary`` as the JSON value of the model metadata key
    ``real_ct`` (``l3seg_lib.training.export.add_metadata(path, real_ct=...)``):
    ``{set: {"n_slices", "dice_raw": {tissue: Dice}, "dice_refined": {...}, "area_err_pct": {...}}}``."""
    out = {}
    for r in summary[summary["model"] == model].to_dict(orient="records"):
        out[r["set"]] = {
            "n_slices": int(r["n"]),
            "dice_raw": {t: round(float(r[f"dice_raw_{t}"]), digits) for t in TISSUES},
            "dice_refined": {t: round(float(r[f"dice_refined_{t}"]), digits) for t in TISSUES},
            "area_err_pct": {t: round(float(r[f"area_err_{t}_pct"]), 1) for t in TISSUES},
        }
    return out


_LEGACY = re.compile(r"Dice muscle ([0-9.]+), SAT ([0-9.]+), VAT ([0-9.]+)", re.IGNORECASE)


def recorded_real_ct(info: ModelSpec | Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Real-CT figures a model records about itself: ``{set: {metric: {tissue: value}}}`` with
    metrics ``dice_raw`` / ``dice_refined`` (0-1). Read from the metadata key ``real_ct`` (see
    :func:`real_ct_metadata`) or, failing that, from the free text ``real_ct_accuracy`` of older
    models ("... T11-L2 ... Dice muscle 0.858, SAT 0.876, VAT 0.831": raw Dice on the
    TotalSegmentator T11-L2 set). ``info`` is a :class:`~l3seg_lib.inference.model_file.ModelSpec` or its
    ``extra`` dict."""
    extra = info.extra if isinstance(info, ModelSpec) else dict(info)
    out: dict[str, dict[str, dict[str, float]]] = {}
    structured = extra.get("real_ct")
    if isinstance(structured, str):
        try:
            structured = json.loads(structured)
        except json.JSONDecodeError:
            structured = None
    if isinstance(structured, Mapping):
        for set_name, figs in structured.items():
            if not isinstance(figs, Mapping):
                continue
            for metric in ("dice_raw", "dice_refined"):
                vals = figs.get(metric)
                if isinstance(vals, Mapping):
                    out.setdefault(set_name, {})[metric] = {t: float(vals[t]) for t in TISSUES if t in vals}
    text = extra.get("real_ct_accuracy")
    if isinstance(text, str) and not out:
        m = _LEGACY.search(text)
        if m and "T11-L2" in text:
            metric = "dice_refined" if "refined" in text.lower() else "dice_raw"
            out["TotalSegmentator T11-L2"] = {metric: dict(zip(TISSUES, (float(x) for x in m.groups())))}
    return out


def check_recorded(summary: pd.DataFrame, model: str, recorded: Mapping[str, Mapping[str, Mapping[str, float]]],
                   tol: float = NOISE_FLOOR) -> pd.DataFrame:
    """Measured against recorded figures of ``model``: one row per (set, metric, tissue) recorded,
    with ``measured``, ``diff`` (measured - recorded) and ``below`` (measured < recorded - ``tol``).
    A set recorded but not measured has NaN ``measured`` and ``below`` False."""
    rows = []
    mine = summary[summary["model"] == model].set_index("set")
    for set_name, metrics in recorded.items():
        for metric, vals in metrics.items():
            for t, rec in vals.items():
                meas = float(mine.loc[set_name, f"{metric}_{t}"]) if set_name in mine.index else float("nan")
                diff = meas - float(rec)
                rows.append({"model": model, "set": set_name, "metric": metric, "tissue": t, "recorded": float(rec),
                             "measured": meas, "diff": diff, "below": bool(np.isfinite(diff) and diff < -tol)})
    return pd.DataFrame(rows, columns=["model", "set", "metric", "tissue", "recorded", "measured", "diff", "below"])
