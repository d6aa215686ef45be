"""Training: one model (Adam, cosine LR, gradient clipping, early stopping on validation Dice)
and patient-wise k-fold cross-validation with a checkpoint per fold and an ensemble model file.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import __version__
from .config import CLASS_NAMES, ModelConfig, Params, TrainConfig
from .dataset import SliceDataset, build_augmentation, fold_members, load_slices
from .losses import SegmentationLoss
from .metrics import TISSUES, confusion_matrix, dice_iou
from .model import build_model

CHECKPOINT_FORMAT = "l3seg-model-v1"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)


def dice_per_slice(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(N, 3) Dice of muscle, SAT, VAT for each slice (NaN where a class is absent in both)."""
    return np.stack([dice_iou(confusion_matrix(p, t))[0][1:] for p, t in zip(pred, true)])


@torch.no_grad()
def predict_probs(models: list[torch.nn.Module], images: np.ndarray, device: torch.device,
                  batch_size: int = 8) -> np.ndarray:
    """Mean softmax of ``models`` for (N, H, W) images in [0, 1] -> (N, C, H, W) float32."""
    out = []
    for m in models:
        m.eval()
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start: start + batch_size]).float()[:, None].to(device)
        probs = sum(m(x).softmax(dim=1) for m in models) / len(models)
        out.append(probs.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASS_NAMES)) + images.shape[1:], np.float32)


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]
    history: pd.DataFrame
    best_epoch: int
    best_dice: dict[str, float]
    """Validation Dice per tissue and ``mean_fg`` at the best epoch (empty without validation)."""
    seconds: float
    val_pred: np.ndarray | None = None
    """Validation predictions (N, H, W) of the best model."""


def train_model(train_images: np.ndarray, train_masks: np.ndarray, val_images: np.ndarray | None,
                val_masks: np.ndarray | None, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int,
                device: torch.device, log_path: str | Path | None = None, desc: str = "train",
                progress: bool = True, init_state: dict[str, torch.Tensor] | None = None) -> TrainResult:
    """Train one U-Net (from ``init_state`` when given, e.g. to fine-tune). With validation data,
    keep the epoch with the best mean foreground Dice and stop after
    ``early_stopping_patience`` epochs without improvement."""
    seed_everything(seed)
    size = int(train_images.shape[-1])
    model = build_model(model_cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(device)
    augment = build_augmentation(train_cfg.augment, size, seed)
    dataset = SliceDataset(train_images, train_masks, augment, train_cfg.data_ratio)
    loader = DataLoader(dataset, batch_size=train_cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed), num_workers=0)
    criterion = SegmentationLoss(train_cfg.class_weights, train_cfg.ce_weight, train_cfg.dice_weight).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, train_cfg.epochs), eta_min=train_cfg.lr * 0.02)
                 if train_cfg.lr_schedule == "cosine" else None)
    has_val = val_images is not None and len(val_images) > 0
    history: list[dict[str, Any]] = []
    best = (-1.0, 0, copy.deepcopy(model.state_dict()), {}, None)
    since_best = 0
    t0 = time.perf_counter()
    bar = tqdm(range(1, train_cfg.epochs + 1), desc=desc, unit="epoch", disable=not progress, mininterval=2.0, leave=False)
    for epoch in bar:
        te = time.perf_counter()
        model.train()
        total, n = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            loss.backward()
            if train_cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            total += float(loss.detach()) * len(x)
            n += len(x)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": total / max(n, 1), "train_slices": n}
        if has_val:
            probs = predict_probs([model], val_images, device, train_cfg.batch_size)
            with torch.no_grad():  # log-probabilities act as logits: softmax(log p) = p
                row["val_loss"] = float(criterion(torch.from_numpy(np.log(np.clip(probs, 1e-7, 1))),
                                                  torch.from_numpy(val_masks.astype(np.int64))))
            pred = probs.argmax(1).astype(np.uint8)
            dice = np.nanmean(dice_per_slice(pred, val_masks), axis=0)
            for name, d in zip(TISSUES, dice):
                row[f"val_dice_{name}"] = float(d)
            row["val_dice_mean_fg"] = float(np.nanmean(dice))
            if row["val_dice_mean_fg"] > best[0]:
                best = (row["val_dice_mean_fg"], epoch, copy.deepcopy(model.state_dict()),
                        {**{n_: row[f"val_dice_{n_}"] for n_ in TISSUES}, "mean_fg": row["val_dice_mean_fg"]}, pred)
                since_best = 0
            else:
                since_best += 1
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", dice=f"{row['val_dice_mean_fg']:.3f}")
        else:
            best = (-1.0, epoch, copy.deepcopy(model.state_dict()), {}, None)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}")
        row["seconds"] = time.perf_counter() - te
        history.append(row)
        if log_path is not None:
            pd.DataFrame(history).to_csv(log_path, index=False)
        if has_val and train_cfg.early_stopping_patience and since_best >= train_cfg.early_stopping_patience:
            break
    bar.close()
    state = {k: v.detach().cpu().clone() for k, v in best[2].items()}
    return TrainResult(state, pd.DataFrame(history), best[1], best[3], time.perf_counter() - t0, best[4])


# --------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(path: str | Path, states: list[dict[str, torch.Tensor]], params: Params, image_size: int,
                    label: str = "model", info: dict[str, Any] | None = None) -> Path:
    """Save one model or a fold ensemble with what inference needs (architecture, window, size)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": CHECKPOINT_FORMAT,
        "l3seg_version": __version__,
        "label": label,
        "classes": list(CLASS_NAMES),
        "model": dataclasses.asdict(params.model),
        "train": params.to_dict()["train"],
        "window_hu": list(params.preprocess.window_hu),
        "image_size": int(image_size),
        "pad_to_square": params.preprocess.pad_to_square,
        "state_dicts": states,
        "info": info or {},
    }, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable model file ({exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an l3seg model file (expected format {CHECKPOINT_FORMAT})")
    return ckpt


def models_from_checkpoint(ckpt: dict[str, Any], device: torch.device) -> list[torch.nn.Module]:
    cfg = ModelConfig(**ckpt["model"])
    models = []
    for state in ckpt["state_dicts"]:
        m = build_model(cfg, n_classes=len(ckpt["classes"]))
        m.load_state_dict(state)
        models.append(m.to(device).eval())
    return models


# --------------------------------------------------------------------------------------------
# cross-validation


@dataclass
class CVResult:
    folds: pd.DataFrame
    """One row per fold: best epoch, validation Dice per tissue, epochs run, seconds."""
    slices: pd.DataFrame
    """Out-of-fold validation Dice per slice (each slice scored by the model that did not see it)."""
    states: list[dict[str, torch.Tensor]]
    model_path: Path | None

    @property
    def mean_fg_dice(self) -> float:
        """Mean foreground Dice over all out-of-fold validation slices."""
        return float(self.slices["dice_mean_fg"].mean())


def cross_validate(processed_dir: str | Path, manifest: pd.DataFrame, split: pd.DataFrame, params: Params,
                   out_dir: str | Path | None = None, image_size: int | None = None,
                   folds: list[int] | None = None, label: str = "model", progress: bool = True) -> CVResult:
    """Train one model per patient-wise fold; validate on the fold's held-out dev patients.

    Writes (when ``out_dir`` is given) ``fold_<k>/log.csv``, ``fold_<k>/best.pt``,
    ``cv_folds.csv``, ``cv_slices.csv`` and the fold ensemble ``model.pt``.
    """
    device = resolve_device(params.device)
    configure_threads(params.num_threads)
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
                          "epochs_run": len(res.history), "seconds": res.seconds,
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
    model_path = None
    if out is not None:
        folds_df.to_csv(out / "cv_folds.csv", index=False)
        slices_df.to_csv(out / "cv_slices.csv", index=False)
        model_path = save_checkpoint(out / "model.pt", states, params, size, label,
                                     {"folds": folds, "cv_mean_fg_dice": float(slices_df["dice_mean_fg"].mean())
                                      if len(slices_df) else None})
    return CVResult(folds_df, slices_df, states, model_path)
