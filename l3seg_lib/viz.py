"""Pictures for clinicians: CT overlays with muscle / SAT / VAT in distinct colours."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from PIL import Image

from .preprocess import window

TISSUE_COLOURS = {1: (230, 57, 70), 2: (255, 200, 60), 3: (60, 170, 230)}
"""RGB per class: muscle red, SAT yellow, VAT blue."""
TISSUE_LABELS = {1: "skeletal muscle", 2: "subcutaneous fat (SAT)", 3: "visceral fat (VAT)"}
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_rgb(hu, labels)).save(path)
    return path


def legend_handles() -> list[Patch]:
    return [Patch(color=np.array(c) / 255, label=TISSUE_LABELS[k]) for k, c in TISSUE_COLOURS.items()]


def error_map_rgb(hu: np.ndarray, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Grey CT with disagreeing pixels marked: missed tissue magenta, extra tissue green."""
    rgb = np.repeat(ct_gray(hu)[..., None], 3, axis=-1).astype(np.float32) * 0.7
    missed = (true > 0) & (pred != true)
    extra = (pred > 0) & (true == 0)
    rgb[missed] = (230, 40, 200)
    rgb[extra] = (40, 220, 90)
    return rgb.astype(np.uint8)


def crop_to_body(hu: np.ndarray, *others: np.ndarray, margin: int = 8, threshold: float = -500.0):
    """Crop arrays to the bounding box of the body (HU above ``threshold``) plus a margin."""
    rows = np.flatnonzero((hu > threshold).any(axis=1))
    cols = np.flatnonzero((hu > threshold).any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return (hu, *others)
    r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, hu.shape[0])
    c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, hu.shape[1])
    return tuple(a[r0:r1, c0:c1] for a in (hu, *others))


def comparison_figure(hu: np.ndarray, true: np.ndarray | None, pred: np.ndarray, title: str = "",
                      figsize: tuple[float, float] = (12, 4)) -> plt.Figure:
    """CT | reference overlay | predicted overlay | error map (reference panels when given)."""
    arrays = crop_to_body(hu, pred, *( [true] if true is not None else []))
    hu_c, pred_c = arrays[0], arrays[1]
    true_c = arrays[2] if true is not None else None
    panels = [("CT", ct_gray(hu_c))]
    if true_c is not None:
        panels.append(("reference", overlay_rgb(hu_c, true_c)))
    panels.append(("prediction", overlay_rgb(hu_c, pred_c)))
    if true_c is not None:
        panels.append(("errors (magenta missed, green extra)", error_map_rgb(hu_c, pred_c, true_c)))
    fig, axes = plt.subplots(1, len(panels), figsize=figsize)
    for ax, (name, img) in zip(np.atleast_1d(axes), panels):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.legend(handles=legend_handles(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
