"""Anatomical clean-up of a predicted label map (optional; ``--no-postprocess`` switches it off).

1. Nothing outside the body: labels outside the body outline (the largest region above -500 HU,
   the CT table cut off) become background.
2. No muscle, SAT or VAT inside bone or the spinal canal: the interior of cortical bone
   (> 250 HU, holes filled: the vertebral body and, within the neural arch, the canal) becomes
   background.
3. No specks: muscle and SAT pieces smaller than ``min_island_cm2`` become background (VAT is
   naturally in many small pieces between the bowel loops and is left as it is).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from l3seg_lib.preprocessing.geometry import body_mask, fill_holes
from l3seg_lib.units import pixel_area_cm2

BONE_HU = 250.0


def clean_labels(labels: np.ndarray, hu: np.ndarray, spacing_mm: tuple[float, float],
                 min_island_cm2: float = 0.5, body: np.ndarray | None = None) -> np.ndarray:
    """A cleaned copy of ``labels`` (rows, cols; classes 0-3) for the HU slice ``hu`` (``body``:
    its :func:`~l3seg_lib.preprocessing.geometry.body_mask`, when the caller has it)."""
    out = labels.copy()
    body = body_mask(hu) if body is None else body
    if body is not None:
        out[~fill_holes(body)] = 0
    bone = fill_holes(ndimage.binary_closing(hu > BONE_HU, iterations=1))
    out[bone & (out > 0)] = 0
    pixel_cm2 = pixel_area_cm2(spacing_mm)
    min_pixels = max(1, int(round(min_island_cm2 / pixel_cm2)))
    for cls in (1, 2):
        regions, n = ndimage.label(out == cls)
        if n == 0:
            continue
        sizes = np.bincount(regions.ravel())
        small = np.flatnonzero(sizes < min_pixels)
        small = small[small > 0]
        if small.size:
            out[np.isin(regions, small)] = 0
    return out
