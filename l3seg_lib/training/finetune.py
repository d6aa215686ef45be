"""Fine-tuning a trained model file on labelled slices, and contiguous slice-block folds for
evaluating that honestly on one volume (neighbouring slices look alike)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from l3seg_lib.config import ModelConfig, Params, params_from_dict
from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.preprocessing.geometry import image_to_model, make_geometry, mask_to_model
from l3seg_lib.training.trainer import train_model


def block_folds(n: int, n_blocks: int = 3, buffer: int = 1) -> list[tuple[list[int], list[int]]]:
    """Contiguous slice blocks: (training slices, test slices) per block, leaving ``buffer``
    slices next to the test block out of training."""
    edges = np.linspace(0, n, n_blocks + 1).round().astype(int)
    folds = []
    for k in range(n_blocks):
        lo, hi = int(edges[k]), int(edges[k + 1])
        test = list(range(lo, hi))
        train = [i for i in range(n) if i < lo - buffer or i >= hi + buffer]
        folds.append((train, test))
    return folds


def params_of_checkpoint(ckpt: dict[str, Any]) -> Params:
    """Params holding a model file's architecture, training settings, window and padding."""
    p = params_from_dict({"model": ckpt["model"], "train": ckpt["train"]}, "model file")
    p.preprocess.window_hu = tuple(ckpt["window_hu"])
    p.preprocess.pad_to_square = ckpt["pad_to_square"]
    p.preprocess.pixel_mm = ckpt.get("pixel_mm")
    return copy.deepcopy(p)


def finetune_params(ckpt: dict[str, Any], epochs: int, lr_factor: float = 0.3) -> Params:
    """Training settings of the model file, with fewer epochs and a lower learning rate."""
    p = params_of_checkpoint(ckpt)
    p.train.epochs = epochs
    p.train.lr = p.train.lr * lr_factor
    p.train.early_stopping_patience = 0
    return p


def model_arrays(volume: CTVolume, labels: np.ndarray, indices: list[int], ckpt: dict[str, Any]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Slices ``indices`` of a volume and its class labels at the model file's input size."""
    spacing = (volume.spacing_mm[1], volume.spacing_mm[2])
    geoms = {i: make_geometry(volume.hu.shape[1:], spacing, ckpt["image_size"], ckpt["pad_to_square"],
                              ckpt.get("pixel_mm"), volume.hu[i]) for i in indices}
    x = np.stack([image_to_model(volume.hu[i], geoms[i], tuple(ckpt["window_hu"])) for i in indices])
    y = np.stack([mask_to_model(labels[i], geoms[i]) for i in indices])
    return x, y


def finetune(ckpt: dict[str, Any], volume: CTVolume, labels: np.ndarray, train_idx: list[int], epochs: int,
             seed: int, device: torch.device, member: int = 0) -> dict[str, torch.Tensor]:
    """Fine-tune one member of the model file on the given slices (no validation: fixed epochs)."""
    p = finetune_params(ckpt, epochs)
    x, y = model_arrays(volume, labels, train_idx, ckpt)
    res = train_model(x, y, None, None, ModelConfig(**ckpt["model"]), p.train, seed, device, progress=False,
                      init_state=ckpt["state_dicts"][member], desc="fine-tune")
    return res.state_dict
