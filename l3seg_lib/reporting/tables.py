"""Tables for readers (the notebook report pages): column names in words, not code names
(``train_patients`` -> ``training patients``, ``dice_mean_fg`` -> ``Dice, mean of the three``,
``log10_lr`` -> ``learning rate (log10)``), and numbers rounded to what they mean (cm² to one
decimal, Dice to three)."""

from __future__ import annotations

import re

import pandas as pd

WORDS = {
    "train_patients": "training patients", "val_patients": "validation patients", "best_epoch": "best epoch",
    "epochs_run": "epochs run", "seconds": "time (s)", "dice_muscle": "Dice muscle", "dice_sat": "Dice SAT",
    "dice_vat": "Dice VAT", "dice_mean_fg": "Dice, mean of the three", "mean_fg_dice": "Dice, mean of the three",
    "target": "mean Dice (validation folds)", "log10_lr": "learning rate (log10)", "data_ratio": "data ratio",
    "w_muscle": "class weight muscle", "w_sat": "class weight SAT", "w_vat": "class weight VAT",
    "kind": "trial kind", "trial": "trial", "patient_id": "patient", "inference_s": "inference (s)",
}
"""Code names of the pipeline's tables and their words."""


def readable_name(name: object) -> str:
    """A column's name in words (:data:`WORDS`, else underscores become spaces, ``cm2`` becomes cm²)."""
    text = str(name)
    if text in WORDS:
        return WORDS[text]
    text = re.sub(r"_cm2_m2\b", " (cm²/m²)", text)
    text = re.sub(r"_cm2\b", " (cm²)", text)
    text = re.sub(r"_pct\b", " (%)", text)
    return text.replace("_", " ")


def readable(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``df`` with its columns and index named in words and its numbers rounded: columns in cm²,
    cm²/m², HU or % to one decimal, the others to ``digits``."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            unit = re.search(r"cm2|cm²|hu\b|HU|%|pct|area|mean difference|difference", str(col), re.I)
            out[col] = out[col].round(1 if unit and "dice" not in str(col).lower() else digits)
    out.columns = [readable_name(c) for c in out.columns]
    if out.index.name:
        out.index.name = readable_name(out.index.name)
    return out
