"""Training one network: Adam, cosine learning rate, gradient clipping, class-weighted loss,
augmentation, and early stopping on validation Dice."""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler
from tqdm import tqdm

from l3seg_lib.config import ModelConfig, TrainConfig
from l3seg_lib.metrics import confusion_matrix, dice_iou
from l3seg_lib.tissues import CLASS_NAMES, TISSUES
from l3seg_lib.training.dataset import SliceDataset, build_augmentation
from l3seg_lib.training.losses import PartialLabelLoss, SegmentationLoss
from l3seg_lib.training.network import build_model


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@torch.no_grad()
def predict_probs(models: list[torch.nn.Module], images: np.ndarray, device: torch.device,
                  batch_size: int = 8) -> np.ndarray:
    """Mean softmax of ``models`` for (N, H, W) images in [0, 1] -> (N, C, H, W) float32 (torch;
    inference outside training runs the exported ONNX file instead)."""
    out = []
    for m in models:
        m.eval()
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start: start + batch_size]).float()[:, None].to(device)
        probs = sum(m(x).softmax(dim=1) for m in models) / len(models)
        out.append(probs.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASS_NAMES)) + images.shape[1:], np.float32)


def dice_per_slice(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(N, 3) Dice of muscle, SAT, VAT for each slice (NaN where a class is absent in both)."""
    return np.stack([dice_iou(confusion_matrix(p, t))[0][1:] for p, t in zip(pred, true)])


@dataclass
class BestEpoch:
    """The epoch kept so far: its score, number, weights, validation Dice and predictions."""

    score: float = -1.0
    """Mean foreground validation Dice (-1 before any validated epoch)."""
    epoch: int = 0
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    dice: dict[str, float] = field(default_factory=dict)
    """Validation Dice per tissue and ``mean_fg`` (empty without validation)."""
    val_pred: np.ndarray | None = None
    """Validation predictions (N, H, W) of this epoch's model."""


@dataclass
class TrainResult:
    """Result of training one model: its weights, per-epoch history, best epoch and its validation Dice."""
    state_dict: dict[str, torch.Tensor]
    history: pd.DataFrame
    best_epoch: int
    best_dice: dict[str, float]
    """Validation Dice per tissue and ``mean_fg`` at the best epoch (empty without validation)."""
    seconds: float
    val_pred: np.ndarray | None = None
    """Validation predictions (N, H, W) of the best model."""
    optimizer_steps: int = 0
    """Optimizer steps taken (the training's compute)."""


def train_model(train_images: np.ndarray, train_masks: np.ndarray, val_images: np.ndarray | None,
                val_masks: np.ndarray | None, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int,
                device: torch.device, log_path: str | Path | None = None, desc: str = "train",
                progress: bool = True, init_state: dict[str, torch.Tensor] | None = None,
                partial_labels: bool = False, sample_weights: np.ndarray | None = None) -> TrainResult:
    """Train one U-Net (from ``init_state`` when given, e.g. to fine-tune). With validation data,
    keep the epoch with the best mean foreground Dice and stop after
    ``early_stopping_patience`` epochs without improvement.

    ``partial_labels``: ``train_masks`` hold per-pixel bit codes of the allowed classes (bit c = class
    c; :func:`~l3seg_lib.training.losses.codes_from_labels` turns class labels into codes) and the loss
    is :func:`~l3seg_lib.training.losses.partial_label_loss`; validation masks stay class labels.
    ``sample_weights`` (one per training slice, needs ``train_cfg.steps_per_epoch``): slices are drawn
    with these relative probabilities (each augmented copy with its original's)."""
    seed_everything(seed)
    size = int(train_images.shape[-1])
    model = build_model(model_cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(device)
    augment = build_augmentation(train_cfg.augment, size, seed)
    dataset = SliceDataset(train_images, train_masks, augment, train_cfg.data_ratio)
    generator = torch.Generator().manual_seed(seed)
    if sample_weights is not None:
        if not train_cfg.steps_per_epoch:
            raise ValueError("sample_weights need train_cfg.steps_per_epoch (steps drawn with replacement)")
        w = np.asarray(sample_weights, dtype=np.float64)
        if w.shape != (len(train_images),) or not np.all(w >= 0) or w.sum() <= 0:
            raise ValueError(f"sample_weights: need {len(train_images)} non-negative weights with a positive sum")
        items = np.concatenate([w, w[np.arange(dataset.n_aug) % max(dataset.n_orig, 1)]])
        sampler = WeightedRandomSampler(torch.from_numpy(items), train_cfg.steps_per_epoch * train_cfg.batch_size,
                                        replacement=True, generator=generator)
        loader = DataLoader(dataset, batch_size=train_cfg.batch_size, sampler=sampler, num_workers=0)
    elif train_cfg.steps_per_epoch:  # equal compute: a fixed number of optimizer steps, whatever the data ratio
        sampler = RandomSampler(dataset, replacement=True, generator=generator,
                                num_samples=train_cfg.steps_per_epoch * train_cfg.batch_size)
        loader = DataLoader(dataset, batch_size=train_cfg.batch_size, sampler=sampler, num_workers=0)
    else:
        loader = DataLoader(dataset, batch_size=train_cfg.batch_size, shuffle=True, generator=generator, num_workers=0)
    criterion = SegmentationLoss(train_cfg.class_weights, train_cfg.ce_weight, train_cfg.dice_weight).to(device)
    train_criterion = (PartialLabelLoss(train_cfg.class_weights, train_cfg.ce_weight, train_cfg.dice_weight).to(device)
                       if partial_labels else criterion)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, train_cfg.epochs), eta_min=train_cfg.lr * 0.02)
                 if train_cfg.lr_schedule == "cosine" else None)
    has_val = val_images is not None and len(val_images) > 0
    history: list[dict[str, Any]] = []
    best = BestEpoch(state=copy.deepcopy(model.state_dict()))
    since_best = 0
    steps = 0
    t0 = time.perf_counter()
    bar = tqdm(range(1, train_cfg.epochs + 1), desc=desc, unit="epoch", disable=not progress, mininterval=2.0, leave=False)
    for epoch in bar:
        te = time.perf_counter()
        model.train()
        total, n = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = train_criterion(model(x), y)
            loss.backward()
            if train_cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            steps += 1
            total += float(loss.detach()) * len(x)
            n += len(x)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": total / max(n, 1), "train_slices": n}
        if has_val:
            probs = predict_probs([model], val_images, device, train_cfg.batch_size)
            with torch.no_grad():  # log-probabilities act as logits: softmax(log p) = p
                row["val_loss"] = float(criterion(torch.from_numpy(np.log(np.clip(probs, 1e-7, 1))).to(device),
                                                  torch.from_numpy(val_masks.astype(np.int64)).to(device)))
            pred = probs.argmax(1).astype(np.uint8)
            dice = np.nanmean(dice_per_slice(pred, val_masks), axis=0)
            for name, d in zip(TISSUES, dice):
                row[f"val_dice_{name}"] = float(d)
            row["val_dice_mean_fg"] = float(np.nanmean(dice))
            if train_cfg.select_epoch == "last" or row["val_dice_mean_fg"] > best.score:
                best = BestEpoch(row["val_dice_mean_fg"], epoch, copy.deepcopy(model.state_dict()),
                                 {**{n_: row[f"val_dice_{n_}"] for n_ in TISSUES}, "mean_fg": row["val_dice_mean_fg"]},
                                 pred)
                since_best = 0
            else:
                since_best += 1
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", dice=f"{row['val_dice_mean_fg']:.3f}")
            if train_cfg.select_epoch == "last":
                since_best = 0  # no early stopping without selection
        else:
            best = BestEpoch(-1.0, epoch, copy.deepcopy(model.state_dict()))
            bar.set_postfix(loss=f"{row['train_loss']:.3f}")
        row["seconds"] = time.perf_counter() - te
        history.append(row)
        if log_path is not None:
            pd.DataFrame(history).to_csv(log_path, index=False)
        if has_val and train_cfg.early_stopping_patience and since_best >= train_cfg.early_stopping_patience:
            break
    bar.close()
    state = {k: v.detach().cpu().clone() for k, v in best.state.items()}
    return TrainResult(state, pd.DataFrame(history), best.epoch, best.dice, time.perf_counter() - t0, best.val_pred,
                       steps)
