"""Patient-wise k-fold cross-validation: one model per fold, a checkpoint per fold and the fold
ensemble as one model file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from l3seg_lib.config import Params
from l3seg_lib.tissues import TISSUES
from l3seg_lib.training.checkpoint import save_checkpoint
from l3seg_lib.training.dataset import load_slices
from l3seg_lib.training.device import configure_torch, resolve_device
from l3seg_lib.training.export import export_onnx
from l3seg_lib.training.splits import fold_members
from l3seg_lib.training.trainer import dice_per_slice, train_model


@dataclass
class CVResult:
    """Result of patient-wise cross-validation: per-fold and per-slice validation Dice, fold weights and the
    ensemble files."""
    folds: pd.DataFrame
    """One row per fold: best epoch, validation Dice per tissue, epochs run, seconds."""
    slices: pd.DataFrame
    """Out-of-fold validation Dice per slice (each slice scored by the model that did not see it)."""
    states: list[dict[str, torch.Tensor]]
    model_path: Path | None
    """The fold ensemble as an ONNX model file (what inference reads), when written."""
    checkpoint_path: Path | None = None
    """The same ensemble as a PyTorch checkpoint (for fine-tuning)."""
    optimizer_steps: int = 0
    """Optimizer steps of all folds together (the cross-validation's compute)."""

    @property
    def mean_fg_dice(self) -> float:
        """Mean foreground Dice over all out-of-fold validation slices."""
        return float(self.slices["dice_mean_fg"].mean())


def cross_validate(processed_dir: str | Path, manifest: pd.DataFrame, split: pd.DataFrame, params: Params,
                   out_dir: str | Path | None = None, image_size: int | None = None,
                   folds: list[int] | None = None, label: str = "model", progress: bool = True) -> CVResult:
    """Train one model per patient-wise fold; validate on the fold's held-out dev patients.

    Writes (when ``out_dir`` is given) ``fold_<k>/log.csv``, ``fold_<k>/best.pt``,
    ``cv_folds.csv``, ``cv_slices.csv`` and the fold ensemble as ``model.onnx`` (for inference) and
    ``model.pt`` (weights, for fine-tuning).
    """
    device = resolve_device(params.device)
    configure_torch(params.num_threads, params.deterministic)
    folds = folds if folds is not None else (params.train.folds_to_run or list(range(params.split.n_folds)))
    out = Path(out_dir) if out_dir is not None else None
    size = image_size or params.preprocess.image_size
    fold_rows, slice_rows, states = [], [], []
    for k in tqdm(folds, desc=f"{label}: folds", unit="fold", disable=not progress, mininterval=2.0):
        train_rows, val_rows = fold_members(manifest, split, k)
        overlap = set(train_rows["patient_id"]) & set(val_rows["patient_id"])
        if overlap:
            raise AssertionError(f"fold {k}: patients in both training and validation: {sorted(overlap)[:5]}")
        xi, yi = load_slices(processed_dir, train_rows, size)
        xv, yv = load_slices(processed_dir, val_rows, size)
        log = None
        if out is not None:
            (out / f"fold_{k}").mkdir(parents=True, exist_ok=True)
            log = out / f"fold_{k}" / "log.csv"
        res = train_model(xi, yi, xv, yv, params.model, params.train, params.seed + k, device, log,
                          desc=f"{label} fold {k}", progress=progress)
        states.append(res.state_dict)
        if out is not None:
            save_checkpoint(out / f"fold_{k}" / "best.pt", [res.state_dict], params, size, f"{label} fold {k}",
                            {"fold": k, "best_epoch": res.best_epoch, "val_dice": res.best_dice})
        fold_rows.append({"fold": k, "train_patients": train_rows["patient_id"].nunique(),
                          "val_patients": val_rows["patient_id"].nunique(), "train_slices": len(train_rows),
                          "val_slices": len(val_rows), "best_epoch": res.best_epoch,
                          "epochs_run": len(res.history), "seconds": res.seconds, "optimizer_steps": res.optimizer_steps,
                          **{f"dice_{n}": res.best_dice.get(n, np.nan) for n in TISSUES},
                          "dice_mean_fg": res.best_dice.get("mean_fg", np.nan)})
        if res.val_pred is not None:
            d = dice_per_slice(res.val_pred, yv)
            for i, (_, row) in enumerate(val_rows.iterrows()):
                slice_rows.append({"fold": k, "case_id": row["case_id"], "patient_id": row["patient_id"],
                                   **{f"dice_{n}": d[i, j] for j, n in enumerate(TISSUES)},
                                   "dice_mean_fg": float(np.nanmean(d[i]))})
    folds_df = pd.DataFrame(fold_rows)
    slices_df = pd.DataFrame(slice_rows)
    model_path = checkpoint_path = None
    if out is not None:
        folds_df.to_csv(out / "cv_folds.csv", index=False)
        slices_df.to_csv(out / "cv_slices.csv", index=False)
        info = {"folds": folds, "training_data": training_data_text(params, manifest, split),
                "cv_mean_fg_dice": float(slices_df["dice_mean_fg"].mean()) if len(slices_df) else None,
                "accuracy": accuracy_text(slices_df)}
        checkpoint_path = save_checkpoint(out / "model.pt", states, params, size, label, info)
        model_path = export_onnx(states, params, size, out / "model.onnx", label, info)
    return CVResult(folds_df, slices_df, states, model_path, checkpoint_path,
                    int(folds_df["optimizer_steps"].sum()) if len(folds_df) else 0)


def training_data_text(params: Params, manifest: pd.DataFrame, split: pd.DataFrame) -> str:
    """What a model was trained on, in words, for its model file and every output naming it."""
    dev = split.loc[split["set"] == "dev", "patient_id"]
    n_slices = int(manifest["patient_id"].isin(set(dev)).sum())
    if params.data.source == "phantom":
        ph = params.data.phantom
        what = f"l3seg synthetic L3 phantom (seed {ph.seed}, {ph.n_patients} patients, {ph.matrix} px)"
    else:
        what = f"the cases of {params.data.manifest}"
    return f"{what}: {dev.nunique()} development patients, {n_slices} slices"


def accuracy_text(slices: pd.DataFrame) -> str:
    """Cross-validated Dice per tissue, in words (empty without validation slices)."""
    if not len(slices):
        return ""
    dice = ", ".join(f"{t} {slices[f'dice_{t}'].mean():.3f}" for t in TISSUES)
    return f"cross-validated Dice on its training data ({len(slices)} slices): {dice}"
