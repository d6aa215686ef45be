"""Training data: in-memory slice arrays, augmentation (albumentations) and the torch Dataset."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from l3seg_lib.config import AugmentConfig
from l3seg_lib.preprocessing.processed import load_arrays


def load_slices(processed_dir: str | Path, rows: pd.DataFrame, image_size: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Stack the model-size images (float32 [0, 1]) and masks (uint8) of ``rows``.

    ``image_size`` different from the stored size resizes them (bilinear / nearest), as used by
    the optimisation's budget mode.
    """
    images, masks = [], []
    for _, row in rows.iterrows():
        arrays = load_arrays(processed_dir, row)
        img, mask = arrays["image"], arrays["mask"]
        if image_size and image_size != img.shape[0]:
            img = cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask, (image_size, image_size), interpolation=cv2.INTER_NEAREST_EXACT)
        images.append(img)
        masks.append(mask)
    return np.stack(images).astype(np.float32), np.stack(masks).astype(np.uint8)


def build_augmentation(cfg: AugmentConfig, image_size: int, seed: int) -> A.Compose:
    """Geometric (rotation, shift, scale; identical for image and mask) and intensity jitter.

    ``cfg.shift_px`` is defined at 256 px and scaled with the model size.
    """
    shift = max(0, int(round(cfg.shift_px * image_size / 256)))
    transforms: list = [
        A.Affine(rotate=(-cfg.rotate_deg, cfg.rotate_deg), translate_px=(-shift, shift), scale=cfg.scale,
                 interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0),
    ]
    if cfg.hflip:
        transforms.append(A.HorizontalFlip(p=0.5))
    if cfg.brightness or cfg.contrast:
        transforms.append(A.RandomBrightnessContrast(brightness_limit=cfg.brightness, contrast_limit=cfg.contrast,
                                                     p=0.8))
    if cfg.noise_std > 0:
        transforms.append(A.GaussNoise(std_range=(0.0, cfg.noise_std), p=0.5))
    return A.Compose(transforms, seed=seed)


class SliceDataset(Dataset):
    """Slices for training: the originals, plus ``data_ratio`` augmented copies per original.

    With N originals the dataset has ``N + round(data_ratio * N)`` items; item ``i >= N`` is a
    freshly augmented copy of original ``(i - N) % N`` (new random parameters each epoch).
    Items are (image tensor (1, H, W) float32, mask tensor (H, W) int64).
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, augment: A.Compose | None = None,
                 data_ratio: float = 0.0, augment_originals: bool = False):
        """Hold ``images`` (N, H, W) and ``masks`` (N, H, W); ``augment_originals`` also augments the originals."""
        if len(images) != len(masks):
            raise ValueError("images and masks differ in number")
        self.images, self.masks = images, masks
        self.augment = augment
        self.n_orig = len(images)
        self.n_aug = int(round(data_ratio * self.n_orig)) if augment is not None else 0
        self.augment_originals = augment_originals

    def __len__(self) -> int:
        """Number of items: originals plus augmented copies."""
        return self.n_orig + self.n_aug

    def __getitem__(self, index: int):
        """(image (1, H, W) float32 in [0, 1], mask (H, W) int64) of item ``index``, augmented when it is a copy
        (or when ``augment_originals``)."""
        src = index if index < self.n_orig else (index - self.n_orig) % self.n_orig
        img, mask = self.images[src], self.masks[src]
        if self.augment is not None and (index >= self.n_orig or self.augment_originals):
            out = self.augment(image=img, mask=mask)
            img, mask = np.clip(out["image"], 0.0, 1.0), out["mask"]
        return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None], \
            torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
