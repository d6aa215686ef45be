"""Evaluation of a model on processed cases at the original resolution, and paired comparison of
two models on the same patients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from tqdm import tqdm

from l3seg_lib.config import CompositionConfig
from l3seg_lib.metrics import (
    confusion_matrix,
    per_patient,
    slice_metrics,
)
from l3seg_lib.inference.predictor import Predictor
from l3seg_lib.measurement.composition import Answer, assess, measure_slice
from l3seg_lib.measures import IMAGE_MEASURES, MEASURES, SMI, VERDICT_KEYS
from l3seg_lib.preprocessing.processed import load_arrays
from l3seg_lib.tissues import TISSUES

COMPOSITION_KEYS = tuple(m.key for m in IMAGE_MEASURES)
"""Measures of one slice compared between prediction and reference (:data:`l3seg_lib.measures.IMAGE_MEASURES`)."""
VERDICTS = VERDICT_KEYS


def evaluate_cases(model: str | Path | Predictor, processed_dir: str | Path, rows: pd.DataFrame,
                   composition: CompositionConfig | None = None, device: str = "auto", progress: bool = True,
                   keep_predictions: bool = False, postprocess: bool = True
                   ) -> tuple[pd.DataFrame, np.ndarray, dict[str, np.ndarray]]:
    """Segment each processed case at its original size and compare with its reference mask.

    Returns (one row per slice: Dice, IoU, areas and area errors, composition from the
    prediction and from the reference with their verdicts, inference seconds; the summed 4x4
    confusion matrix; predictions by case_id when ``keep_predictions``).
    """
    comp = composition or CompositionConfig()
    predictor = model if isinstance(model, Predictor) else Predictor(model, device, postprocess=postprocess)
    out, cm = [], np.zeros((4, 4), dtype=np.int64)
    preds: dict[str, np.ndarray] = {}
    for _, row in tqdm(rows.iterrows(), total=len(rows), desc="evaluate", unit="slice", disable=not progress, mininterval=2.0):
        arrays = load_arrays(processed_dir, row)
        hu = arrays["hu"].astype(np.float32)
        spacing = (float(row["spacing_row_mm"]), float(row["spacing_col_mm"]))
        pred = predictor.predict_hu(hu, spacing)
        true = arrays["mask_orig"]
        cm += confusion_matrix(pred.labels, true)
        clinical = {k: (None if pd.isna(row.get(k)) else row.get(k)) for k in ("sex", "height_m", "weight_kg", "bmi")}
        rec = {"case_id": row["case_id"], "patient_id": row["patient_id"], **slice_metrics(pred.labels, true, spacing),
               "inference_s": pred.seconds}
        for source, labels in (("pred", pred.labels), ("true", true)):
            m = measure_slice(hu, labels, spacing, comp.hu_ranges, bool(row.get("hu_calibrated", True)))
            verdict = assess(m, clinical, comp.cutoffs)
            rec.update({f"{k}_{source}": m[k] for k in COMPOSITION_KEYS})
            rec[f"{SMI.key}_{source}"] = verdict[SMI.key]
            rec.update({f"{k}_{source}": verdict[k] for k in VERDICTS})
        out.append(rec)
        if keep_predictions:
            preds[row["case_id"]] = pred.labels
    return pd.DataFrame(out), cm, preds


COMPOSITION_MEASURES = {m.key: m.name_with_unit for m in MEASURES}
"""Body-composition columns of :func:`evaluate_cases` (with ``_pred`` / ``_true``) and their names."""


def composition_comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Body composition from the predicted masks against the reference masks, per measure:
    reference mean, predicted mean, mean difference and mean absolute difference (units in the
    row names)."""
    rows = []
    for key, name in COMPOSITION_MEASURES.items():
        pred, true = df[f"{key}_pred"].astype(float), df[f"{key}_true"].astype(float)
        rows.append({"measure": name, "reference mean": true.mean(), "predicted mean": pred.mean(),
                     "mean difference": (pred - true).mean(), "mean |difference|": (pred - true).abs().mean()})
    return pd.DataFrame(rows).set_index("measure")


def verdict_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """How often the verdict from the predicted mask equals the one from the reference mask, and
    Cohen's kappa (agreement beyond chance; NaN when either side has a single verdict throughout)."""
    rows = []
    for v in VERDICTS:
        both = df[(df[f"{v}_true"] != Answer.NOT_COMPUTABLE) & (df[f"{v}_pred"] != Answer.NOT_COMPUTABLE)]
        rows.append({"finding": v.replace("_", " "), "slices": len(both),
                     "agreement": float((both[f"{v}_true"] == both[f"{v}_pred"]).mean()) if len(both) else np.nan,
                     "Cohen's kappa": _kappa(both[f"{v}_true"], both[f"{v}_pred"]),
                     "positive (reference)": int((both[f"{v}_true"] == Answer.YES).sum()),
                     "positive (model)": int((both[f"{v}_pred"] == Answer.YES).sum())})
    return pd.DataFrame(rows).set_index("finding")


def _kappa(a: pd.Series, b: pd.Series) -> float:
    """Cohen's kappa of two verdict columns (scikit-learn); NaN when it is undefined (fewer than two
    slices, or one verdict throughout on either side)."""
    if len(a) < 2 or a.nunique() < 2 or b.nunique() < 2:
        return float("nan")
    from sklearn.metrics import cohen_kappa_score  # the train extra, present where models are evaluated

    return float(cohen_kappa_score(a.astype(str), b.astype(str)))


def paired_comparison(a: pd.DataFrame, b: pd.DataFrame, name_a: str = "baseline", name_b: str = "optimised"
                      ) -> pd.DataFrame:
    """Per-tissue Dice of two models on the same patients: mean +- SD of the per-patient Dice,
    mean difference (b - a), and the Wilcoxon signed-rank test over patients."""
    pa = per_patient(a).set_index("patient_id")
    pb = per_patient(b).set_index("patient_id")
    common = pa.index.intersection(pb.index)
    if len(common) != len(pa) or len(common) != len(pb):
        raise ValueError("the two evaluations cover different patients; compare on the same held-out patients")
    rows = []
    for t in (*TISSUES, "mean_fg"):
        col = f"dice_{t}"
        x, y = pa.loc[common, col].to_numpy(), pb.loc[common, col].to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        diff = y - x
        if len(diff) >= 2 and np.any(diff != 0):
            p = float(stats.wilcoxon(y, x, zero_method="wilcox").pvalue)
        else:
            p = 1.0
        rows.append({"tissue": t, f"{name_a} mean": x.mean(), f"{name_a} sd": x.std(ddof=1),
                     f"{name_b} mean": y.mean(), f"{name_b} sd": y.std(ddof=1),
                     "difference": diff.mean(), "patients": len(diff), "better / worse / equal":
                     f"{int((diff > 0).sum())} / {int((diff < 0).sum())} / {int((diff == 0).sum())}",
                     "wilcoxon p": p})
    return pd.DataFrame(rows).set_index("tissue")
