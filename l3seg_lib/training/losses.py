"""Class-weighted cross-entropy, soft Dice, and their weighted sum."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None,
                   include_background: bool = False, eps: float = 1.0) -> torch.Tensor:
    """1 - weighted mean soft Dice over classes, pooled over the batch.

    Soft Dice per class c: (2 sum p_c y_c + eps) / (sum p_c + sum y_c + eps), with p the softmax
    probabilities and y the one-hot target. ``class_weights`` weight the per-class terms.
    """
    n_classes = logits.shape[1]
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target.long(), n_classes).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    start = 0 if include_background else 1
    dice = dice[start:]
    if class_weights is None:
        return 1.0 - dice.mean()
    w = class_weights[start:].to(dice.dtype)
    return 1.0 - (dice * w).sum() / w.sum().clamp_min(1e-12)


class SegmentationLoss(nn.Module):
    """``ce_weight * CE(class_weights) + dice_weight * soft Dice(class_weights)``."""

    def __init__(self, class_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), ce_weight: float = 1.0,
                 dice_weight: float = 1.0):
        """Loss with per-class ``class_weights`` (background, muscle, SAT, VAT) and the weights of its two terms."""
        super().__init__()
        self.register_buffer("class_weights", torch.tensor(list(class_weights), dtype=torch.float32))
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted cross-entropy plus weighted soft Dice of ``logits`` (N, C, H, W) against ``target`` (N, H, W)."""
        loss = logits.new_zeros(())
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(logits, target.long(), weight=self.class_weights)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.class_weights)
        return loss
