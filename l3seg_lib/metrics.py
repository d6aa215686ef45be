"""Per-class Dice and IoU, confusion matrices, tissue-area errors, and their aggregation.

Empty cases: when a class is absent from both prediction and reference, Dice and IoU are
undefined and returned as NaN (left out of means, counted separately). When it is absent from
one of them only, both are 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from l3seg_lib.tissues import N_CLASSES, TISSUES


def confusion_matrix(pred: np.ndarray, true: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """Counts[i, j] = pixels with reference class i predicted as class j."""
    pred = np.asarray(pred).astype(np.int64).ravel()
    true = np.asarray(true).astype(np.int64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"prediction and reference differ in size: {pred.size} vs {true.size}")
    return np.bincount(true * n_classes + pred, minlength=n_classes**2).reshape(n_classes, n_classes)


def dice_iou(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class Dice and IoU from a confusion matrix (NaN where the class is absent in both)."""
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
    return dice, iou


def areas_cm2(mask: np.ndarray, spacing_mm: tuple[float, float], n_classes: int = N_CLASSES) -> np.ndarray:
    """Area of each class in cm2: pixel count x row spacing x column spacing (mm2) / 100."""
    counts = np.bincount(np.asarray(mask).astype(np.int64).ravel(), minlength=n_classes)[:n_classes]
    return counts * float(spacing_mm[0]) * float(spacing_mm[1]) / 100.0


def slice_metrics(pred: np.ndarray, true: np.ndarray, spacing_mm: tuple[float, float]) -> dict[str, float]:
    """Dice, IoU and area (predicted, reference, error in cm2 and %) for each tissue of one slice."""
    cm = confusion_matrix(pred, true)
    dice, iou = dice_iou(cm)
    a_pred = areas_cm2(pred, spacing_mm)
    a_true = areas_cm2(true, spacing_mm)
    out: dict[str, float] = {}
    for c, name in enumerate(TISSUES, start=1):
        out[f"dice_{name}"] = dice[c]
        out[f"iou_{name}"] = iou[c]
        out[f"area_pred_{name}_cm2"] = a_pred[c]
        out[f"area_true_{name}_cm2"] = a_true[c]
        out[f"area_err_{name}_cm2"] = a_pred[c] - a_true[c]
        out[f"area_err_{name}_pct"] = 100.0 * (a_pred[c] - a_true[c]) / a_true[c] if a_true[c] > 0 else np.nan
    fg = [out[f"dice_{n}"] for n in TISSUES]
    out["dice_mean_fg"] = float(np.nanmean(fg)) if not np.all(np.isnan(fg)) else np.nan
    return out


def per_patient(df: pd.DataFrame) -> pd.DataFrame:
    """Mean of every numeric metric over the slices of each patient."""
    numeric = df.select_dtypes("number").columns
    return df.groupby("patient_id")[list(numeric)].mean().reset_index()


def summary_table(df: pd.DataFrame, metrics: tuple[str, ...] = ("dice", "iou", "area_err", "area_abs_err")) -> pd.DataFrame:
    """Per-tissue mean +- SD table (rows: tissues; columns: metrics) with the number of values."""
    rows = []
    for name in TISSUES:
        row = {"tissue": name}
        for metric in metrics:
            if metric == "area_err":
                col = f"area_err_{name}_cm2"
                vals = df[col]
            elif metric == "area_abs_err":
                vals = df[f"area_err_{name}_pct"].abs()
            else:
                vals = df[f"{metric}_{name}"]
            vals = vals.dropna()
            key = {"dice": "Dice", "iou": "IoU", "area_err": "area error (cm²)",
                   "area_abs_err": "|area error| (%)"}.get(metric, metric)
            row[f"{key} mean"] = vals.mean()
            row[f"{key} sd"] = vals.std(ddof=1) if len(vals) > 1 else np.nan
        row["n"] = int(df[f"dice_{name}"].notna().sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("tissue")


def bland_altman(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Bland-Altman agreement of paired measurements: bias (mean of pred - ref), SD of the
    differences, 95% limits of agreement (bias +- 1.96 SD), and n."""
    pred = np.asarray(pred, dtype=float)
    ref = np.asarray(ref, dtype=float)
    ok = np.isfinite(pred) & np.isfinite(ref)
    diff = pred[ok] - ref[ok]
    n = int(diff.size)
    bias = float(diff.mean()) if n else np.nan
    sd = float(diff.std(ddof=1)) if n > 1 else np.nan
    return {"n": n, "bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}
