"""The localiser's review picture: sagittal and coronal reformats with the counted vertebrae
labelled, the L3 body marked and the measured slice drawn (Pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.localize.l3 import L3Location
from l3seg_lib.preprocessing.geometry import window

BONE_WINDOW_HU = (-250.0, 1000.0)
PANEL_HEIGHT = 420
"""Pixels of each panel along the body axis."""


def _panel(plane: np.ndarray, dz: float, dx: float) -> Image.Image:
    """A (z, x) reformat as a grey image with z up and square millimetres."""
    grey = (window(plane, *BONE_WINDOW_HU) * 255).round().astype(np.uint8)[::-1]
    h_mm, w_mm = plane.shape[0] * dz, plane.shape[1] * dx
    scale = PANEL_HEIGHT / max(h_mm, 1e-6)
    size = (max(1, int(round(w_mm * scale))), PANEL_HEIGHT)
    return Image.fromarray(grey).convert("RGB").resize(size, Image.BILINEAR)


def localizer_picture(volume: CTVolume, loc: L3Location) -> Image.Image:
    """Sagittal (left) and coronal (right) reformats through the spine with the result drawn; they
    follow the traced spine slice by slice when the localiser traced one."""
    dz, dr, dc = volume.spacing_mm
    nz, nr, nc = volume.hu.shape
    col = loc.centre_col if loc.centre_col is not None else nc // 2
    if loc.centre_row is not None and np.isfinite(loc.centre_row).any():
        row = int(np.nanmedian(loc.centre_row))
    else:
        row = nr // 2
    if loc.column is not None and np.isfinite(loc.column).all():
        # follow the traced spine slice by slice (scoliosis, off-centre and rotated patients)
        cols = np.clip(np.round(loc.column[:, 1]).astype(int), 0, nc - 1)
        rows = np.clip(np.round(loc.column[:, 0]).astype(int), 0, nr - 1)
        z = np.arange(nz)
        sag_plane, cor_plane = volume.hu[z, :, cols], volume.hu[z, rows, :]
    else:
        sag_plane = volume.hu[:, :, min(max(col, 0), nc - 1)]
        cor_plane = volume.hu[:, min(max(row, 0), nr - 1), :]
    sag = _panel(sag_plane, dz, dr)
    cor = _panel(cor_plane, dz, dc)
    top = 34
    canvas = Image.new("RGB", (sag.width + cor.width + 10, PANEL_HEIGHT + top), (20, 20, 20))
    canvas.paste(sag, (0, top))
    canvas.paste(cor, (sag.width + 10, top))
    draw = ImageDraw.Draw(canvas, "RGBA")

    def y_of(z: float) -> float:
        """Picture y (pixels) of the centre of slice ``z`` (superior slices at the top)."""
        return top + PANEL_HEIGHT - (z + 0.5) / nz * PANEL_HEIGHT

    width = canvas.width
    for d in loc.discs:
        draw.line([(0, y_of(d)), (width, y_of(d))], fill=(120, 170, 255, 90), width=1)
    if loc.l3_range is not None:
        lo, hi = loc.l3_range
        draw.rectangle([(0, y_of(hi + 0.5)), (width, y_of(lo - 0.5))], fill=(255, 210, 0, 45))
    for vt in loc.vertebrae:
        draw.text((4, y_of(vt.middle) - 6), vt.name + (" (ribs)" if vt.ribs else ""), fill=(255, 255, 255))
    for i in loc.slices or ([loc.slice_index] if loc.slice_index is not None else []):
        draw.line([(0, y_of(i)), (width, y_of(i))], fill=(255, 40, 40, 255), width=2)
    text = loc.summary()
    colour = (140, 230, 140) if loc.found else (255, 170, 60)
    draw.text((4, 3), text[:120], fill=colour)
    if len(text) > 120:
        draw.text((4, 17), text[120:240], fill=colour)
    return canvas


def save_localizer_png(path: str | Path, volume: CTVolume, loc: L3Location) -> Path:
    """Save the localizer review picture (:func:`localizer_picture`) of ``volume`` and ``loc`` as PNG; returns
    the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    localizer_picture(volume, loc).save(path)
    return path
