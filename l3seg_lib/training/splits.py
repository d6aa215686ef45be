"""Patient-wise splits: held-out test patients and cross-validation folds, never split by slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from l3seg_lib.config import SplitConfig


def make_splits(manifest: pd.DataFrame, cfg: SplitConfig, seed: int) -> pd.DataFrame:
    """Assign every patient to the held-out test set or to one cross-validation fold.

    Splits are made over patients, never slices, so all slices of a patient share one role.
    Folds are stratified by ``cfg.stratify_by`` (e.g. sex) when every stratum has at least
    ``n_folds`` patients; otherwise plain shuffled folds are used (column ``stratified``).

    Returns one row per patient: ``patient_id, set ('dev'|'test'), fold (-1 for test),
    stratified``.
    """
    patients = manifest.drop_duplicates("patient_id").set_index("patient_id")
    ids = np.array(sorted(patients.index))
    n_test = int(round(cfg.test_fraction * len(ids)))
    if len(ids) - n_test < cfg.n_folds:
        raise ValueError(f"{len(ids)} patients are too few for {cfg.n_folds} folds with "
                         f"{n_test} held out for testing")
    strata = None
    if cfg.stratify_by and cfg.stratify_by in patients.columns:
        s = patients.loc[ids, cfg.stratify_by]
        if s.notna().all() and s.value_counts().min() >= max(cfg.n_folds, 2):
            strata = s.astype(str).to_numpy()
    if n_test:
        dev, test = train_test_split(ids, test_size=n_test, random_state=seed, stratify=strata)
    else:
        dev, test = ids, np.array([], dtype=ids.dtype)
    dev = np.array(sorted(dev))
    dev_strata = None
    if strata is not None:
        s = patients.loc[dev, cfg.stratify_by].astype(str)
        if s.value_counts().min() >= cfg.n_folds:
            dev_strata = s.to_numpy()
    if dev_strata is not None:
        folds_iter = StratifiedKFold(cfg.n_folds, shuffle=True, random_state=seed).split(dev, dev_strata)
    else:
        folds_iter = KFold(cfg.n_folds, shuffle=True, random_state=seed).split(dev)
    fold_of = {}
    for k, (_, val_idx) in enumerate(folds_iter):
        for i in val_idx:
            fold_of[dev[i]] = k
    rows = [{"patient_id": p, "set": "dev", "fold": fold_of[p]} for p in dev]
    rows += [{"patient_id": p, "set": "test", "fold": -1} for p in sorted(test)]
    out = pd.DataFrame(rows)
    out["stratified"] = dev_strata is not None
    return out


def check_patient_wise(split: pd.DataFrame) -> None:
    """Raise if any patient appears in two roles (test and a fold, or two folds)."""
    dup = split["patient_id"][split["patient_id"].duplicated()]
    if len(dup):
        raise AssertionError(f"patients in more than one split: {sorted(set(dup))[:5]}")


def fold_members(manifest: pd.DataFrame, split: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training slices, validation slices) of one fold, from dev patients only."""
    roles = manifest.merge(split[["patient_id", "set", "fold"]], on="patient_id", how="left")
    if roles["set"].isna().any():
        missing = roles.loc[roles["set"].isna(), "patient_id"].unique()[:5]
        raise ValueError(f"patients without a split assignment: {list(missing)}")
    dev = roles[roles["set"] == "dev"]
    return dev[dev["fold"] != fold].reset_index(drop=True), dev[dev["fold"] == fold].reset_index(drop=True)


def subset(manifest: pd.DataFrame, split: pd.DataFrame, role: str) -> pd.DataFrame:
    """Slices of the ``dev`` or ``test`` patients."""
    ids = set(split.loc[split["set"] == role, "patient_id"])
    return manifest[manifest["patient_id"].isin(ids)].reset_index(drop=True)
