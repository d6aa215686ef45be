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
LEGEND = ("Left: sagittal, right: coronal, both through the traced spine. Names: the vertebrae counted "
          "(? partly in view; R / L: rib heads traced on the patient's right / left). Blue lines: discs "
          "(d = slice). Yellow: the L3 body. Red: the measured slice. Orange triangles: rib heads traced. "
          "Green dashes: the iliac crests' tops. Slice numbers at the right are those of the series "
          "sorted from inferior (0) to superior.")
"""What the picture's marks mean, printed under it."""


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
    font_px = max(FONT_PX, round(FONT_PX * (sag.width + cor.width + 10) / PAGE_PX))
    font = ImageFont.load_default(size=font_px)
    counts = list(loc.counts.items()) if loc.counts else [("", loc.vertebrae)]
    name_px = int(font_px * 5.2)  # one column of vertebra names ("T12 R L") per count
    left = name_px * len(counts) + 6
    axis_px = int(font_px * 6.5)  # slice axis, disc and measured-slice numbers
    width = left + sag.width + 10 + cor.width + axis_px
    line_px = font_px + font_px // 3
    lines = summary_lines(volume, loc, min(LINE_CHARS, max(30, int(width / (0.55 * font_px)))))
    legend = LEGEND if not loc.counts else LEGEND + " Name columns: " + " | ".join(f"count from the {t}" for t, _ in counts) + "."
    legend_lines = textwrap.wrap(legend, max(30, int(width / (0.55 * font_px))), break_long_words=False)
    top = 8 + line_px * (len(lines) + (1 if loc.counts else 0))
    height = top + PANEL_HEIGHT + 8 + line_px * len(legend_lines)
    canvas = Image.new("RGB", (width, height), (20, 20, 20))
    x_sag, x_cor = left, left + sag.width + 10
    canvas.paste(sag, (x_sag, top))
    canvas.paste(cor, (x_cor, top))
    draw = ImageDraw.Draw(canvas, "RGBA")
    x_axis = x_cor + cor.width + 4

    def y_of(z: float) -> float:
        """Picture y (pixels) of the centre of slice ``z`` (superior slices at the top)."""
        return top + PANEL_HEIGHT - (z + 0.5) / nz * PANEL_HEIGHT

    # slice axis: a tick every slice where they fit, a number every 5 or 10 (as many as fit)
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100) if s * PANEL_HEIGHT / nz >= 1.6 * font_px)
    for z in range(0, nz):
        if z % step == 0:
            y = y_of(z)
            draw.line([(x_axis, y), (x_axis + 6, y)], fill=(170, 170, 170), width=1)
            draw.text((x_axis + 9, y - font_px // 2), str(z), fill=(150, 150, 150), font=font)
    draw.text((x_axis, top - line_px), "slice", fill=(150, 150, 150), font=font)
    for d in loc.discs:
        draw.line([(left, y_of(d)), (x_axis, y_of(d))], fill=(120, 170, 255, 110), width=1)
        draw.text((x_axis + 9 + int(2.6 * font_px), y_of(d) - font_px // 2), f"d{d}", fill=(130, 180, 255), font=font)
    if loc.l3_range is not None:
        lo, hi = loc.l3_range
        draw.rectangle([(left, y_of(hi + 0.5)), (x_axis, y_of(lo - 0.5))], fill=(255, 210, 0, 45))
    for c, (title, vertebrae) in enumerate(counts):
        x = 4 + c * name_px
        if title:
            draw.text((x, top - line_px), "sacrum" if "sacrum" in title else "ribs", fill=(230, 230, 230), font=font)
        for vt in vertebrae:
            ribs = " ".join(s for s, on in (("R", vt.ribs_right), ("L", vt.ribs_left)) if on)
            text = vt.name + ("?" if vt.partial else "") + (f" {ribs}" if ribs else "")
            y = y_of((vt.z_lo + vt.z_hi) / 2) - font_px // 2
            draw.text((x, y), text, fill=(255, 255, 255) if not vt.partial else (170, 170, 170), font=font)
    # rib heads as traced, on the coronal panel 40 mm to their side of the spine
    sx = cor.width / nc
    for z, side, _ in loc.rib_heads:
        zi = int(np.clip(round(z), 0, nz - 1))
        centre = loc.column[zi, 1] if loc.column is not None and np.isfinite(loc.column[zi, 1]) else col
        x = x_cor + (centre + side * 40.0 / dc) * sx
        y, r = y_of(z), max(4, font_px // 3)
        draw.polygon([(x - r, y + r), (x + r, y + r), (x, y - r)], fill=(255, 150, 30, 230))
    if loc.crest_slice is not None:
        y = y_of(loc.crest_slice)
        for x0 in range(x_cor, x_cor + cor.width, 12):
            draw.line([(x0, y), (x0 + 6, y)], fill=(90, 230, 120), width=2)
        draw.text((x_cor + 4, y - font_px - 2), "iliac crests", fill=(90, 230, 120), font=font)
    for i in loc.slices or ([loc.slice_index] if loc.slice_index is not None else []):
        draw.line([(left, y_of(i)), (x_axis, y_of(i))], fill=(255, 40, 40, 255), width=2)
    if loc.slice_index is not None:
        draw.text((x_sag + 4, y_of(loc.slice_index) + 2), f"measured: slice {loc.slice_index}", fill=(255, 90, 90),
                  font=font)
    colour = (140, 230, 140) if loc.found else (255, 170, 60)
    for k, line in enumerate(lines):
        draw.text((6, 4 + line_px * k), line, fill=colour if k < len(lines) - 1 else (200, 200, 200), font=font)
    for k, line in enumerate(legend_lines):
        draw.text((6, top + PANEL_HEIGHT + 6 + line_px * k), line, fill=(170, 170, 170), font=font)
    return canvas


def save_localizer_png(path: str | Path, volume: CTVolume, loc: L3Location) -> Path:
    """Save the localizer review picture (:func:`localizer_picture`) of ``volume`` and ``loc`` as PNG; returns
    the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # never a torn file under the final name
        localizer_picture(volume, loc).save(tmp, format="PNG")
    return path
