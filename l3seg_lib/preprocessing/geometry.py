"""HU windowing and resizing to the model size and back (used by training and inference alike).

Resizing keeps track of geometry: an image of (rows, cols) pixels at (row_mm, col_mm) is
optionally padded with air to a square, then resized to ``size x size``; each model pixel then
covers ``eff_spacing_mm = (row_mm * padded_rows / size, col_mm * padded_cols / size)``, so areas
computed at the model size stay in cm2. :func:`probs_to_original` undoes both steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from l3seg_lib.imageio.ct import AIR_HU


def window(hu: np.ndarray, lo: float = -200.0, hi: float = 800.0) -> np.ndarray:
    """Clip HU to [lo, hi] and scale to [0, 1] (float32)."""
    if not lo < hi:
        raise ValueError(f"window [{lo}, {hi}] HU is empty")
    out = (np.clip(hu.astype(np.float32), lo, hi) - lo) / (hi - lo)
    return out.astype(np.float32)


@dataclass(frozen=True)
class Geometry:
    """How an original slice maps onto the square model grid."""

    rows: int
    cols: int
    spacing_mm: tuple[float, float]
    """Original (row, col) pixel spacing in mm."""
    size: int
    pad: tuple[int, int, int, int]
    """Air padding (top, bottom, left, right) in original pixels."""

    @property
    def padded_shape(self) -> tuple[int, int]:
        top, bottom, left, right = self.pad
        return self.rows + top + bottom, self.cols + left + right

    @property
    def eff_spacing_mm(self) -> tuple[float, float]:
        """(row, col) mm per pixel at the model size."""
        pr, pc = self.padded_shape
        return self.spacing_mm[0] * pr / self.size, self.spacing_mm[1] * pc / self.size


def make_geometry(shape: tuple[int, int], spacing_mm: tuple[float, float], size: int, pad_to_square: bool = True) -> Geometry:
    rows, cols = int(shape[0]), int(shape[1])
    pad = (0, 0, 0, 0)
    if pad_to_square and rows != cols:
        n = max(rows, cols)
        dr, dc = n - rows, n - cols
        pad = (dr // 2, dr - dr // 2, dc // 2, dc - dc // 2)
    return Geometry(rows, cols, (float(spacing_mm[0]), float(spacing_mm[1])), int(size), pad)


def _pad(arr: np.ndarray, geom: Geometry, value: float) -> np.ndarray:
    top, bottom, left, right = geom.pad
    if not any(geom.pad):
        return arr
    return np.pad(arr, ((top, bottom), (left, right)), mode="constant", constant_values=value)


def image_to_model(hu: np.ndarray, geom: Geometry, window_hu: tuple[float, float]) -> np.ndarray:
    """HU slice -> windowed [0, 1] float32 image of ``size x size`` (bilinear)."""
    img = window(_pad(hu, geom, AIR_HU), *window_hu)
    return cv2.resize(img, (geom.size, geom.size), interpolation=cv2.INTER_LINEAR)


def mask_to_model(mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Class mask -> ``size x size`` uint8 (nearest neighbour)."""
    m = _pad(mask.astype(np.uint8), geom, 0)
    return cv2.resize(m, (geom.size, geom.size), interpolation=cv2.INTER_NEAREST_EXACT)


def probs_to_original(probs: np.ndarray, geom: Geometry) -> np.ndarray:
    """Class probabilities (C, size, size) -> (C, rows, cols) on the original grid (bilinear)."""
    pr, pc = geom.padded_shape
    hwc = np.ascontiguousarray(np.moveaxis(probs.astype(np.float32), 0, -1))
    up = cv2.resize(hwc, (pc, pr), interpolation=cv2.INTER_LINEAR)
    if up.ndim == 2:
        up = up[:, :, None]
    top, _, left, _ = geom.pad
    up = up[top: top + geom.rows, left: left + geom.cols]
    return np.moveaxis(up, -1, 0)


def labels_to_original(labels: np.ndarray, geom: Geometry) -> np.ndarray:
    """Class labels (size, size) -> (rows, cols) (nearest neighbour)."""
    pr, pc = geom.padded_shape
    up = cv2.resize(labels.astype(np.uint8), (pc, pr), interpolation=cv2.INTER_NEAREST_EXACT)
    top, _, left, _ = geom.pad
    return up[top: top + geom.rows, left: left + geom.cols]




def geometry_from_row(row: Any) -> Geometry:
    """The geometry stored in a processed-manifest row (a mapping or pandas row)."""
    return Geometry(
        int(row["rows"]), int(row["cols"]), (float(row["spacing_row_mm"]), float(row["spacing_col_mm"])),
        int(row["image_size"]),
        (int(row["pad_top"]), int(row["pad_bottom"]), int(row["pad_left"]), int(row["pad_right"])),
    )
