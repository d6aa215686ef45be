"""Overlay pictures: CT in a display window with muscle, SAT and VAT tinted (numpy + Pillow only)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from l3seg_lib.names import atomic_path
from l3seg_lib.preprocessing.geometry import body_box, window
from l3seg_lib.tissues import CLASSES, IMAT

TISSUE_COLOURS = {t.label: t.rgb for t in CLASSES}
"""RGB per class label (from :mod:`l3seg_lib.tissues`): muscle red, SAT yellow, VAT blue."""
TISSUE_LABELS = {t.label: t.name for t in CLASSES}
"""Display name per class label."""
DISPLAY_WINDOW_HU = (-250.0, 250.0)
"""Soft-tissue display window for pictures (not the model window)."""


def ct_gray(hu: np.ndarray, display_window: tuple[float, float] = DISPLAY_WINDOW_HU) -> np.ndarray:
    """HU -> uint8 grey image in the display window."""
    return (window(hu, *display_window) * 255).round().astype(np.uint8)


def overlay_rgb(hu: np.ndarray, labels: np.ndarray, alpha: float = 0.45,
                display_window: tuple[float, float] = DISPLAY_WINDOW_HU) -> np.ndarray:
    """RGB uint8 image of the CT with each tissue tinted in its colour."""
    gray = ct_gray(hu, display_window).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    for cls, colour in TISSUE_COLOURS.items():
        m = labels == cls
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(colour, dtype=np.float32)
    return rgb.round().clip(0, 255).astype(np.uint8)


def save_overlay_png(path: str | Path, hu: np.ndarray, labels: np.ndarray) -> Path:
    """Save the tissue overlay of ``labels`` on ``hu`` as PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # never a torn file under the final name
        Image.fromarray(overlay_rgb(hu, labels)).save(tmp, format="PNG")
    return path


def error_map_rgb(hu: np.ndarray, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Grey CT with disagreeing pixels marked: missed tissue magenta, extra tissue green."""
    rgb = np.repeat(ct_gray(hu)[..., None], 3, axis=-1).astype(np.float32) * 0.7
    missed = (true > 0) & (pred != true)
    extra = (pred > 0) & (true == 0)
    rgb[missed] = (230, 40, 200)
    rgb[extra] = (40, 220, 90)
    return rgb.astype(np.uint8)


def crop_to_body(hu: np.ndarray, *others: np.ndarray, margin: int = 8, threshold: float = -500.0):
    """Crop arrays to the bounding box of the body (:func:`~l3seg_lib.preprocessing.geometry.body_box`,
    which leaves out the CT table) plus a margin."""
    box = body_box(hu, threshold)
    if box is None:
        return (hu, *others)
    r0, r1 = max(box[0] - margin, 0), min(box[1] + margin, hu.shape[0])
    c0, c1 = max(box[2] - margin, 0), min(box[3] + margin, hu.shape[1])
    return tuple(a[r0:r1, c0:c1] for a in (hu, *others))



IMAT_RGB = IMAT.rgb
"""Colour of IMAT (muscle-compartment pixels in the IMAT HU range) on the report picture."""
SCALE_BAR_CM = (10.0, 5.0, 2.0, 1.0)
"""Scale bar lengths tried, longest first: the first no wider than a third of the panel is drawn."""


def report_picture_rgb(hu: np.ndarray, labels: np.ndarray, spacing_mm: tuple[float, float] | None = None,
                       imat_hu: tuple[float, float] | None = None, alpha: float = 0.45, margin_mm: float = 8.0
                       ) -> np.ndarray:
    """The picture a reader checks a slice on: the plain CT (left) beside the same CT with muscle,
    SAT, VAT and IMAT tinted (right), both cropped to the body (the table left out), with a scale
    bar and its length when ``spacing_mm`` (row, column; mm) is known. ``imat_hu``: the IMAT HU
    range (muscle-compartment pixels inside it are tinted as IMAT)."""
    row_mm, col_mm = (float(spacing_mm[0]), float(spacing_mm[1])) if spacing_mm else (1.0, 1.0)
    margin = max(2, int(round(margin_mm / max(min(row_mm, col_mm), 1e-3))))
    hu_c, lab_c = crop_to_body(hu, labels, margin=margin)
    plain = np.repeat(ct_gray(hu_c)[..., None], 3, axis=-1)
    tinted = overlay_rgb(hu_c, lab_c, alpha)
    if imat_hu is not None:
        imat = (lab_c == 1) & (hu_c >= imat_hu[0]) & (hu_c <= imat_hu[1])
        tinted[imat] = (0.3 * plain[imat] + 0.7 * np.array(IMAT_RGB)).round().clip(0, 255).astype(np.uint8)
    gap = np.full((hu_c.shape[0], max(2, hu_c.shape[1] // 60), 3), 255, np.uint8)
    picture = np.concatenate([plain, gap, tinted], axis=1)
    if spacing_mm:
        picture = _scale_bar(picture, plain.shape[1], col_mm)
    return picture


def _scale_bar(picture: np.ndarray, panel_width: int, col_mm: float) -> np.ndarray:
    """``picture`` with a white scale bar (dark edge, a tick per centimetre) and its length at the
    bottom left of the plain panel."""
    from PIL import ImageDraw, ImageFont

    cm = next((c for c in SCALE_BAR_CM if c * 10.0 / col_mm <= panel_width / 3), None)
    if cm is None:
        return picture
    length = int(round(cm * 10.0 / col_mm))
    h = picture.shape[0]
    thick = max(2, h // 100)
    r1 = h - max(4, h // 40)
    r0, c0 = r1 - thick, max(3, panel_width // 30)
    if r0 - thick - 1 < 0 or c0 + length + 1 > panel_width:
        return picture
    picture = picture.copy()
    picture[r0 - 1:r1 + 1, c0 - 1:c0 + length + 1] = 0
    picture[r0:r1, c0:c0 + length] = 255
    for k in range(int(cm) + 1):  # a tick per centimetre above the bar
        c = min(c0 + int(round(k * 10.0 / col_mm)), c0 + length - 1)
        picture[r0 - thick - 1:r0, c:c + 1] = 255
    img = Image.fromarray(picture)
    size = max(11, h // 24)
    ImageDraw.Draw(img).text((c0 + length + 6, r1), f"{cm:g} cm", fill=(255, 255, 255), anchor="ls",
                             font=ImageFont.load_default(size=size), stroke_width=max(1, size // 10),
                             stroke_fill=(0, 0, 0))
    return np.asarray(img).copy()


PNG_COMPRESS_LEVEL = 3
"""zlib level of the report pictures: about three times faster to write than Pillow's default (6),
the files about a tenth larger."""


def report_picture_png(hu: np.ndarray, labels: np.ndarray, spacing_mm: tuple[float, float] | None = None,
                       imat_hu: tuple[float, float] | None = None, thumbnail_width: int | None = None
                       ) -> bytes | tuple[bytes, bytes]:
    """:func:`report_picture_rgb`, PNG-encoded; with ``thumbnail_width`` also the thumbnail of its
    tinted half, that many pixels wide (``(picture, thumbnail)``)."""
    rgb = report_picture_rgb(hu, labels, spacing_mm, imat_hu)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    if thumbnail_width is None:
        return buf.getvalue()
    tinted = rgb[:, rgb.shape[1] - (rgb.shape[1] - max(2, rgb.shape[1] // 121)) // 2:]
    return buf.getvalue(), _thumbnail(Image.fromarray(tinted), thumbnail_width)


def _thumbnail(img: Image.Image, width: int) -> bytes:
    """``img`` scaled to ``width`` pixels wide, PNG-encoded."""
    height = max(1, round(img.height * width / max(img.width, 1)))
    img = img.resize((width, height), Image.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()

