"""Class-weighted cross-entropy, soft Dice, and their weighted sum; the same against partial labels
(a set of allowed classes per pixel, :func:`partial_label_loss`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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


def allowed_from_codes(codes: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(N, H, W) integer bit codes -> (N, C, H, W) bool: class c is allowed where bit c is set.

    Code 0 (no bit set: the fill of padding and of augmentation's empty borders) means background only."""
    codes = codes.long()
    codes = torch.where(codes == 0, torch.ones_like(codes), codes)
    bits = torch.arange(n_classes, device=codes.device).view(1, -1, 1, 1)
    return ((codes[:, None] >> bits) & 1).bool()


def codes_from_labels(labels: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Class labels (0-3) -> bit codes ``1 << label`` (one allowed class per pixel), same type."""
    if isinstance(labels, torch.Tensor):
        return torch.bitwise_left_shift(torch.ones_like(labels, dtype=torch.uint8), labels.to(torch.uint8))
    return np.left_shift(np.uint8(1), np.asarray(labels).astype(np.uint8)).astype(np.uint8)


def partial_label_loss(logits: torch.Tensor, codes: torch.Tensor, class_weights: torch.Tensor | None = None,
                       ce_weight: float = 1.0, dice_weight: float = 1.0, eps: float = 1.0) -> torch.Tensor:
    """Loss against partial labels: per pixel a set of allowed classes (bit codes, :func:`allowed_from_codes`).

    - marginal-likelihood cross-entropy ``-log sum_{c allowed} p_c`` (the ordinary cross-entropy where one
      class is allowed), a weighted mean over pixels: weight ``class_weights[c]`` for a pixel whose one allowed
      class is c, 1 for a pixel with several (``class_weights`` None: all 1);
    - soft Dice (:func:`soft_dice_loss` form, foreground classes) over the fully labelled pixels only.

    With one allowed class everywhere it equals ``SegmentationLoss`` (``ce_weight`` CE + ``dice_weight`` Dice).
    """
    n_classes = logits.shape[1]
    allowed = allowed_from_codes(codes, n_classes)
    n_allowed = allowed.sum(1)
    single = n_allowed == 1
    loss = logits.new_zeros(())
    logp = logits.log_softmax(dim=1)
    if ce_weight:
        marg = torch.logsumexp(logp.masked_fill(~allowed, float("-inf")), dim=1)
        if class_weights is None:
            w = torch.ones_like(marg)
        else:
            cw = class_weights.to(logits.dtype).view(1, -1, 1, 1)
            w = torch.where(single, (allowed.to(logits.dtype) * cw).sum(1), torch.ones_like(marg))
        loss = loss + ce_weight * (-(marg * w).sum() / w.sum().clamp_min(1e-12))
    if dice_weight:
        probs = logp.exp()
        valid = single[:, None].to(probs.dtype)
        onehot = allowed.to(probs.dtype) * valid
        dims = (0, 2, 3)
        inter = (probs * onehot).sum(dims)
        denom = (probs * valid).sum(dims) + onehot.sum(dims)
        dice = ((2 * inter + eps) / (denom + eps))[1:]
        if class_weights is None:
            dl = 1.0 - dice.mean()
        else:
            cw = class_weights[1:].to(dice.dtype)
            dl = 1.0 - (dice * cw).sum() / cw.sum().clamp_min(1e-12)
        loss = loss + dice_weight * dl
    return loss


class PartialLabelLoss(SegmentationLoss):
    """:func:`partial_label_loss` with the weights of :class:`SegmentationLoss`; targets are bit codes."""

    def forward(self, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` (N, C, H, W) against allowed-class bit codes ``codes`` (N, H, W)."""
        return partial_label_loss(logits, codes, self.class_weights, self.ce_weight, self.dice_weight)
