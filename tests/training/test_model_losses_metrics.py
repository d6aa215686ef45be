"""U-Net shapes, loss maths, metric edge cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from l3seg_lib.config import ModelConfig
from l3seg_lib.metrics import (
    areas_cm2,
    bland_altman,
    confusion_matrix,
    dice_iou,
    per_patient,
    slice_metrics,
    summary_table,
)
from l3seg_lib.training.losses import SegmentationLoss, soft_dice_loss
from l3seg_lib.training.network import UNet, build_model, count_parameters


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
@pytest.mark.parametrize("depth, size", [(2, 32), (4, 64)])
def test_unet_output_shape(norm, depth, size):
    model = build_model(ModelConfig(depth=depth, base_width=4, norm=norm, dropout=0.1)).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 1, size, size + 16 * (depth == 2)))
    assert out.shape == (2, 4, size, size + 16 * (depth == 2))


def test_unet_rejects_indivisible_size_and_counts_parameters():
    model = UNet(depth=3, base_width=4)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.zeros(1, 1, 36, 36))
    assert count_parameters(UNet(depth=4, base_width=8)) < count_parameters(UNet(depth=4, base_width=16))


def _logits_for(target: torch.Tensor, confidence: float = 20.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float() * confidence


def test_soft_dice_perfect_and_worst():
    target = torch.randint(0, 4, (2, 8, 8))
    assert soft_dice_loss(_logits_for(target), target).item() == pytest.approx(0.0, abs=1e-4)
    wrong = (target + 1) % 4
    assert soft_dice_loss(_logits_for(wrong), target, eps=1e-6).item() == pytest.approx(1.0, abs=1e-3)


def test_soft_dice_matches_hand_computation():
    target = torch.tensor([[[0, 1], [1, 2]]])
    logits = torch.zeros(1, 4, 2, 2)  # uniform probabilities 0.25
    # class 1: inter = 2 * 0.25, sum p = 1, sum y = 2 -> dice = (1 + eps) / (3 + eps); eps = 1
    # class 2: inter = 0.25 -> (0.5 + 1) / (1 + 1 + 1); class 3: (0 + 1) / (1 + 0 + 1)
    expected = 1 - np.mean([2 / 4, 1.5 / 3, 1 / 2])
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    w = torch.tensor([1.0, 3.0, 1.0, 0.0])
    expected_w = 1 - (3 * 0.5 + 1 * 0.5) / 4
    assert soft_dice_loss(logits, target, w).item() == pytest.approx(expected_w, rel=1e-6)


def test_weighted_cross_entropy_and_sum():
    target = torch.tensor([[[0, 1], [1, 2]]])
    logits = torch.zeros(1, 4, 2, 2)
    ce_only = SegmentationLoss((1, 1, 1, 1), ce_weight=1.0, dice_weight=0.0)(logits, target)
    assert ce_only.item() == pytest.approx(math.log(4), rel=1e-6)
    # class weights change a non-uniform loss: upweighting the worst-predicted class raises it
    logits = _logits_for(target, 2.0)
    logits[0, :, 1, 1] = 0.0  # the class-2 pixel is uncertain
    plain = SegmentationLoss((1, 1, 1, 1), 1.0, 0.0)(logits, target)
    heavy = SegmentationLoss((1, 1, 5, 1), 1.0, 0.0)(logits, target)
    assert heavy.item() > plain.item()
    both = SegmentationLoss((1, 1, 1, 1), 2.0, 0.5)(logits, target)
    dice = soft_dice_loss(logits, target, torch.ones(4))
    assert both.item() == pytest.approx(2 * plain.item() + 0.5 * dice.item(), rel=1e-5)


def test_confusion_dice_iou_hand_values():
    true = np.array([[1, 1, 2, 0], [3, 3, 0, 0]])
    pred = np.array([[1, 2, 2, 0], [3, 0, 0, 1]])
    cm = confusion_matrix(pred, true)
    assert cm[1, 1] == 1 and cm[1, 2] == 1 and cm[3, 0] == 1 and cm[0, 1] == 1
    dice, iou = dice_iou(cm)
    assert dice[1] == pytest.approx(2 * 1 / (2 + 1 + 1))  # tp 1, fp 1, fn 1
    assert dice[2] == pytest.approx(2 / 3)
    assert iou[3] == pytest.approx(0.5)


def test_empty_mask_cases_are_defined():
    z = np.zeros((4, 4), dtype=np.uint8)
    dice, iou = dice_iou(confusion_matrix(z, z))
    assert np.isnan(dice[1:]).all() and np.isnan(iou[1:]).all()  # absent in both: undefined
    pred = z.copy()
    pred[0, 0] = 3
    dice, iou = dice_iou(confusion_matrix(pred, z))
    assert dice[3] == 0.0 and iou[3] == 0.0  # false positive only
    dice, _ = dice_iou(confusion_matrix(z, pred))
    assert dice[3] == 0.0  # missed entirely
    m = slice_metrics(z, z, (1.0, 1.0))
    assert np.isnan(m["dice_mean_fg"]) and np.isnan(m["area_err_muscle_pct"])


def test_areas_with_anisotropic_spacing():
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[:5, :10] = 1  # 50 pixels
    mask[5:, :] = 2  # 100 pixels
    area = areas_cm2(mask, (0.8, 0.5))  # 0.4 mm2 per pixel
    assert area[1] == pytest.approx(50 * 0.4 / 100)
    assert area[2] == pytest.approx(100 * 0.4 / 100)
    m = slice_metrics(np.where(mask == 1, 0, mask), mask, (0.8, 0.5))
    assert m["area_err_muscle_cm2"] == pytest.approx(-0.2) and m["area_err_muscle_pct"] == pytest.approx(-100.0)


def test_aggregation_and_bland_altman():
    df = pd.DataFrame({"patient_id": ["a", "a", "b"], "dice_muscle": [0.8, 1.0, 0.5], "dice_sat": [1, 1, 1],
                       "dice_vat": [np.nan, 0.5, 0.7], "iou_muscle": [0.7, 1.0, 0.4], "iou_sat": [1, 1, 1],
                       "iou_vat": [np.nan, 0.4, 0.6], **{f"area_err_{t}_cm2": [1.0, -1.0, 2.0] for t in ("muscle", "sat", "vat")},
                       **{f"area_err_{t}_pct": [1.0, -3.0, 2.0] for t in ("muscle", "sat", "vat")}})
    pp = per_patient(df).set_index("patient_id")
    assert pp.loc["a", "dice_muscle"] == pytest.approx(0.9)
    assert pp.loc["a", "dice_vat"] == pytest.approx(0.5)  # NaN slice left out
    table = summary_table(df)
    assert table.loc["vat", "n"] == 2
    assert table.loc["muscle", "|area error| (%) mean"] == pytest.approx(2.0)
    ba = bland_altman(np.array([11.0, 19.0, 32.0]), np.array([10.0, 20.0, 30.0]))
    assert ba["bias"] == pytest.approx(2 / 3) and ba["n"] == 3
    assert ba["loa_high"] - ba["loa_low"] == pytest.approx(2 * 1.96 * np.std([1, -1, 2], ddof=1))
