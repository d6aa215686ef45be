"""Overlay pictures: CT in a display window with muscle, SAT and VAT tinted (numpy + Pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from l3seg_lib.names import atomic_path
from l3seg_lib.preprocessing.geometry import body_box, window
from l3seg_lib.tissues import CLASSES

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
