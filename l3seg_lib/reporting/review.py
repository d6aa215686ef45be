"""The localiser's review picture: sagittal and coronal reformats with the counted vertebrae
labelled, the L3 body marked and the measured slice drawn (Pillow only)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from l3seg_lib.imageio.ct import CTVolume
from l3seg_lib.localize.l3 import L3Location
from l3seg_lib.names import atomic_path
from l3seg_lib.preprocessing.geometry import window

BONE_WINDOW_HU = (-250.0, 1000.0)
PANEL_HEIGHT = 560
"""Pixels of each panel along the body axis (the picture is at least 512 px high)."""
LINE_CHARS = 90
"""Characters per line of the text above the panels (wrapped between words) at most."""
FONT_PX = 16
"""Text size on the picture as shown on the page; larger on pictures wider than :data:`PAGE_PX`,
which the page shows scaled down to its width."""
PAGE_PX = 1100
"""Width of the patient page's content (pixels)."""


def _panel(plane: np.ndarray, dz: float, dx: float) -> Image.Image:
    """A (z, x) reformat as a grey image with z up and square millimetres."""
    grey = (window(plane, *BONE_WINDOW_HU) * 255).round().astype(np.uint8)[::-1]
    h_mm, w_mm = plane.shape[0] * dz, plane.shape[1] * dx
    scale = PANEL_HEIGHT / max(h_mm, 1e-6)
    size = (max(1, int(round(w_mm * scale))), PANEL_HEIGHT)
    # coarse scans (enlarged 2x or more): nearest neighbour, so each CT voxel stays a visible block
    coarse = size[0] >= 2 * plane.shape[1] or size[1] >= 2 * plane.shape[0]
    return Image.fromarray(grey).convert("RGB").resize(size, Image.NEAREST if coarse else Image.BILINEAR)


def summary_lines(volume: CTVolume, loc: L3Location, width: int = LINE_CHARS) -> list[str]:
    """The text above the panels: the localiser's summary wrapped between words, and the true
    voxel size of the scan."""
    dz, dr, dc = volume.spacing_mm
    lines = textwrap.wrap(loc.summary(), width, break_long_words=False, break_on_hyphens=False) or [""]
    lines.append(f"CT voxel {dr:.2f} x {dc:.2f} mm in plane, {dz:.2f} mm between slices; "
                 f"{volume.hu.shape[0]} slices")
    return lines


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
    width = sag.width + cor.width + 10
    font_px = max(FONT_PX, round(FONT_PX * width / PAGE_PX))
    line_px = font_px + font_px // 3
    font = ImageFont.load_default(size=font_px)
    lines = summary_lines(volume, loc, min(LINE_CHARS, max(30, int(width / (0.55 * font_px)))))
    top = 8 + line_px * len(lines)
    canvas = Image.new("RGB", (width, PANEL_HEIGHT + top), (20, 20, 20))
    canvas.paste(sag, (0, top))
    canvas.paste(cor, (sag.width + 10, top))
    draw = ImageDraw.Draw(canvas, "RGBA")

    def y_of(z: float) -> float:
        """Picture y (pixels) of the centre of slice ``z`` (superior slices at the top)."""
        return top + PANEL_HEIGHT - (z + 0.5) / nz * PANEL_HEIGHT

    for d in loc.discs:
        draw.line([(0, y_of(d)), (width, y_of(d))], fill=(120, 170, 255, 90), width=1)
    if loc.l3_range is not None:
        lo, hi = loc.l3_range
        draw.rectangle([(0, y_of(hi + 0.5)), (width, y_of(lo - 0.5))], fill=(255, 210, 0, 45))
    for vt in loc.vertebrae:
        draw.text((4, y_of(vt.middle) - font_px // 2), vt.name + (" (ribs)" if vt.ribs else ""), fill=(255, 255, 255),
                  font=font)
    for i in loc.slices or ([loc.slice_index] if loc.slice_index is not None else []):
        draw.line([(0, y_of(i)), (width, y_of(i))], fill=(255, 40, 40, 255), width=2)
    colour = (140, 230, 140) if loc.found else (255, 170, 60)
    for k, line in enumerate(lines):
        draw.text((6, 4 + line_px * k), line, fill=colour if k < len(lines) - 1 else (200, 200, 200), font=font)
    return canvas


def save_localizer_png(path: str | Path, volume: CTVolume, loc: L3Location) -> Path:
    """Save the localizer review picture (:func:`localizer_picture`) of ``volume`` and ``loc`` as PNG; returns
    the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # never a torn file under the final name
        localizer_picture(volume, loc).save(tmp, format="PNG")
    return path
