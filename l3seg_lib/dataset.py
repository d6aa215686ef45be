"""Training data: patient-wise splits, in-memory slice arrays, and the augmented torch Dataset."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from torch.utils.data import Dataset

from .config import AugmentConfig, SplitConfig
from .preprocess import load_arrays


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
        if len(images) != len(masks):
            raise ValueError("images and masks differ in number")
        self.images, self.masks = images, masks
        self.augment = augment
        self.n_orig = len(images)
        self.n_aug = int(round(data_ratio * self.n_orig)) if augment is not None else 0
        self.augment_originals = augment_originals

    def __len__(self) -> int:
        return self.n_orig + self.n_aug

    def __getitem__(self, index: int):
        src = index if index < self.n_orig else (index - self.n_orig) % self.n_orig
        img, mask = self.images[src], self.masks[src]
        if self.augment is not None and (index >= self.n_orig or self.augment_originals):
            out = self.augment(image=img, mask=mask)
            img, mask = np.clip(out["image"], 0.0, 1.0), out["mask"]
        return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None], \
            torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
