"""Pixel geometry in the units measurements are given in: a slice's (row, col) pixel spacing in
mm, and the area of one pixel in cm². Every area in cm² is a pixel count times
:func:`pixel_area_cm2`, and every slice's spacing comes from :func:`slice_spacing_mm`.
"""

from __future__ import annotations

from collections.abc import Sequence


def slice_spacing_mm(spacing_mm: Sequence[float]) -> tuple[float, float]:
    """(row, col) pixel spacing in mm of an axial slice, from a volume's (z, row, col) spacing or a
    slice's (row, col) spacing."""
    if len(spacing_mm) not in (2, 3):
        raise ValueError(f"spacing must be (row, col) or (z, row, col) in mm, got {tuple(spacing_mm)}")
    return float(spacing_mm[-2]), float(spacing_mm[-1])


def pixel_area_cm2(spacing_mm: Sequence[float]) -> float:
    """Area of one pixel in cm² for a (row, col) spacing in mm: row × col / 100."""
    return float(spacing_mm[0]) * float(spacing_mm[1]) / 100.0
