"""HU windowing and resizing to the model size and back (used by training and inference alike).

Resizing keeps track of geometry (:class:`Geometry`): either the whole image, padded with air to a
square, is resized to ``size x size``, or (physical scale) the image is resized to a fixed pixel
size in mm and placed with the body at the grid's centre, so that a thin SAT ring or abdominal
wall keeps the same number of pixels whatever the field of view. Each model pixel covers
``eff_spacing_mm``, so areas computed at the model size stay in cm2; :func:`probs_to_original`
goes back to the original grid, where areas are measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from l3seg_lib.imageio.ct import AIR_HU


def window(hu: np.ndarray, lo: float = -200.0, hi: float = 800.0) -> np.ndarray:
    """Clip HU to [lo, hi] and scale to [0, 1] (float32)."""
    if not lo < hi:
        raise ValueError(f"window [{lo}, {hi}] HU is empty")
    out = (np.clip(hu.astype(np.float32), lo, hi) - lo) / (hi - lo)
    return out.astype(np.float32)


def body_mask(hu: np.ndarray, threshold: float = -500.0) -> np.ndarray | None:
    """The body on an axial slice: the largest region above ``threshold`` HU after an opening
    that cuts thin contacts (the CT table, a blanket); None when there is none."""
    from scipy import ndimage

    regions, n = ndimage.label(ndimage.binary_opening(hu > threshold, iterations=2))
    if n == 0:
        return None
    return regions == (np.argmax(np.bincount(regions.ravel())[1:]) + 1)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its enclosed holes filled (the same result as ``ndimage.binary_fill_holes``,
    by labelling the background once instead of iterating a propagation)."""
    from scipy import ndimage

    background, n = ndimage.label(~mask)
    if n == 0:
        return mask.copy()
    border = np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))
    outside = np.isin(background, border[border > 0])
    return ~outside


def body_box(hu: np.ndarray, threshold: float = -500.0, body: np.ndarray | None = None
             ) -> tuple[int, int, int, int] | None:
    """Bounding box (row0, row1, col0, col1; ends exclusive) of :func:`body_mask` (or of ``body``
    when the caller has it already), or None."""
    body = body_mask(hu, threshold) if body is None else body
    if body is None:
        return None
    rows = np.flatnonzero(body.any(axis=1))
    cols = np.flatnonzero(body.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


FIT_FRACTION = 0.94
"""At a physical pixel size, a body wider than this share of the model field of view is shown at
a coarser pixel so that it fits."""


@dataclass(frozen=True)
class Geometry:
    """How an original slice maps onto the square model grid.

    Two modes. Whole image (``pixel_mm`` None): padded with air to a square, then resized to
    ``size``. Physical scale: resized to ``pixel_mm`` per pixel (coarser only if the body would
    not fit) and placed with the body's centre at the grid's centre (``scaled`` shape, ``offset``
    of its top-left corner in the grid; parts outside the grid are cut, the rest is air).
    """

    rows: int
    cols: int
    spacing_mm: tuple[float, float]
    """Original (row, col) pixel spacing in mm."""
    size: int
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Whole-image mode: air padding (top, bottom, left, right) in original pixels."""
    scaled: tuple[int, int] | None = None
    """Physical mode: (rows, cols) of the resized image."""
    offset: tuple[int, int] = (0, 0)
    """Physical mode: grid position of the resized image's top-left pixel."""

    @property
    def padded_shape(self) -> tuple[int, int]:
        """(rows, cols) in original pixels after the whole-image air padding."""
        top, bottom, left, right = self.pad
        return self.rows + top + bottom, self.cols + left + right

    @property
    def eff_spacing_mm(self) -> tuple[float, float]:
        """(row, col) mm per pixel at the model size."""
        if self.scaled is not None:
            return self.spacing_mm[0] * self.rows / self.scaled[0], self.spacing_mm[1] * self.cols / self.scaled[1]
        pr, pc = self.padded_shape
        return self.spacing_mm[0] * pr / self.size, self.spacing_mm[1] * pc / self.size


def make_geometry(shape: tuple[int, int], spacing_mm: tuple[float, float], size: int, pad_to_square: bool = True,
                  pixel_mm: float | None = None, hu: np.ndarray | None = None, body: np.ndarray | None = None
                  ) -> Geometry:
    """The geometry of a slice of ``shape`` pixels at ``spacing_mm`` (row, col) on a ``size`` grid.

    With ``pixel_mm`` (physical scale) the body (found in ``hu``; the image centre without it)
    is centred and shown at ``pixel_mm`` per pixel, or coarser when it is wider than
    :data:`FIT_FRACTION` of the grid.
    """
    rows, cols = int(shape[0]), int(shape[1])
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]))
    if pixel_mm is None:
        pad = (0, 0, 0, 0)
        if pad_to_square and rows != cols:
            n = max(rows, cols)
            dr, dc = n - rows, n - cols
            pad = (dr // 2, dr - dr // 2, dc // 2, dc - dc // 2)
        return Geometry(rows, cols, spacing, int(size), pad)
    box = body_box(hu, body=body) if hu is not None else None
    r0, r1, c0, c1 = box if box is not None else (0, rows, 0, cols)
    extent = max((r1 - r0) * spacing[0], (c1 - c0) * spacing[1])
    px = max(float(pixel_mm), extent / (size * FIT_FRACTION))
    h2, w2 = max(1, int(round(rows * spacing[0] / px))), max(1, int(round(cols * spacing[1] / px)))
    cr, cc = (r0 + r1) / 2 * h2 / rows, (c0 + c1) / 2 * w2 / cols
    return Geometry(rows, cols, spacing, int(size), scaled=(h2, w2),
                    offset=(int(round(size / 2 - cr)), int(round(size / 2 - cc))))


def _pad(arr: np.ndarray, geom: Geometry, value: float) -> np.ndarray:
    """``arr`` padded with ``value`` by ``geom.pad`` (top, bottom, left, right) pixels; unchanged without padding."""
    top, bottom, left, right = geom.pad
    if not any(geom.pad):
        return arr
    return np.pad(arr, ((top, bottom), (left, right)), mode="constant", constant_values=value)


def _place(img: np.ndarray, geom: Geometry, value: float) -> np.ndarray:
    """Put a resized image (H, W[, C]) into the ``size`` grid at ``geom.offset``."""
    out = np.full((geom.size, geom.size, *img.shape[2:]), value, dtype=img.dtype)
    top, left = geom.offset
    h, w = img.shape[:2]
    r0, c0 = max(0, top), max(0, left)
    r1, c1 = min(geom.size, top + h), min(geom.size, left + w)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = img[r0 - top: r1 - top, c0 - left: c1 - left]
    return out


def _take(grid: np.ndarray, geom: Geometry, value: np.ndarray | float) -> np.ndarray:
    """The resized image's area (H, W[, C]) out of a ``size`` grid (the inverse of :func:`_place`);
    pixels outside the grid get ``value``."""
    h, w = geom.scaled
    out = np.empty((h, w, *grid.shape[2:]), dtype=grid.dtype)
    out[...] = value
    top, left = geom.offset
    r0, c0 = max(0, top), max(0, left)
    r1, c1 = min(geom.size, top + h), min(geom.size, left + w)
    if r1 > r0 and c1 > c0:
        out[r0 - top: r1 - top, c0 - left: c1 - left] = grid[r0:r1, c0:c1]
    return out


def _shrink_or_grow(rows: int, cols: int, h: int, w: int) -> int:
    """OpenCV interpolation for resizing (rows, cols) to (h, w): area when shrinking either axis, else linear."""
    return cv2.INTER_AREA if h < rows or w < cols else cv2.INTER_LINEAR


def image_to_model(hu: np.ndarray, geom: Geometry, window_hu: tuple[float, float]) -> np.ndarray:
    """HU slice -> windowed [0, 1] float32 image of ``size x size``."""
    if geom.scaled is not None:
        h, w = geom.scaled
        img = cv2.resize(window(hu, *window_hu), (w, h), interpolation=_shrink_or_grow(geom.rows, geom.cols, h, w))
        return _place(img, geom, float(window(np.array([AIR_HU]), *window_hu)[0]))
    img = window(_pad(hu, geom, AIR_HU), *window_hu)
    return cv2.resize(img, (geom.size, geom.size), interpolation=cv2.INTER_LINEAR)


def mask_to_model(mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Class mask -> ``size x size`` uint8 (nearest neighbour)."""
    if geom.scaled is not None:
        h, w = geom.scaled
        m = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        return _place(m, geom, 0)
    m = _pad(mask.astype(np.uint8), geom, 0)
    return cv2.resize(m, (geom.size, geom.size), interpolation=cv2.INTER_NEAREST_EXACT)


def probs_to_original(probs: np.ndarray, geom: Geometry) -> np.ndarray:
    """Class probabilities (C, size, size) -> (C, rows, cols) on the original grid (bilinear);
    what lay outside the model grid is background."""
    hwc = np.ascontiguousarray(np.moveaxis(probs.astype(np.float32), 0, -1))
    if geom.scaled is not None:
        background = np.zeros(hwc.shape[-1], np.float32)
        background[0] = 1.0
        up = cv2.resize(_take(hwc, geom, background), (geom.cols, geom.rows), interpolation=cv2.INTER_LINEAR)
        if up.ndim == 2:
            up = up[:, :, None]
        return np.moveaxis(up, -1, 0)
    pr, pc = geom.padded_shape
    up = cv2.resize(hwc, (pc, pr), interpolation=cv2.INTER_LINEAR)
    if up.ndim == 2:
        up = up[:, :, None]
    top, _, left, _ = geom.pad
    up = up[top: top + geom.rows, left: left + geom.cols]
    return np.moveaxis(up, -1, 0)


def labels_to_original(labels: np.ndarray, geom: Geometry) -> np.ndarray:
    """Class labels (size, size) -> (rows, cols) (nearest neighbour)."""
    if geom.scaled is not None:
        return cv2.resize(_take(labels.astype(np.uint8), geom, 0), (geom.cols, geom.rows),
                          interpolation=cv2.INTER_NEAREST_EXACT)
    pr, pc = geom.padded_shape
    up = cv2.resize(labels.astype(np.uint8), (pc, pr), interpolation=cv2.INTER_NEAREST_EXACT)
    top, _, left, _ = geom.pad
    return up[top: top + geom.rows, left: left + geom.cols]

