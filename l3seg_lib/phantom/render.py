"""Rendering one synthetic L3 slice by composing the anatomy, structure by structure."""

from __future__ import annotations

import numpy as np

from l3seg_lib.phantom import anatomy, realism
from l3seg_lib.phantom.patients import PatientSpec

STRUCTURES = (
    anatomy.table,
    anatomy.body_and_sat,
    anatomy.wall_muscles,
    anatomy.cavity,
    anatomy.kidneys,
    anatomy.liver,
    anatomy.great_vessels,
    anatomy.bowel,
    anatomy.mesenteric_vessels,
    anatomy.posterior_muscles,
    anatomy.vertebra,
)
"""Painting order: later structures paint over earlier ones."""
REALISM = (realism.vertebral_body, realism.ribs, realism.arms, realism.upper_abdomen_organs, realism.contrast_phase,
           realism.randomise_intensities)
"""Added, in this order, for patients with ``realism`` on."""


def render_slice(spec: PatientSpec, slice_index: int, matrix: int = 512) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render one slice: (HU float32, anatomical labels uint8, info) in canonical orientation.

    ``info`` holds the pixel spacing (mm), the world position of the first pixel (mm), the
    slice's distance from the middle of L3 (mm) and the noise SD (HU).
    """
    frame = anatomy.body_frame(spec, slice_index, matrix)
    for paint in STRUCTURES:
        paint(frame)
    if spec.realism:
        for k, add in enumerate(REALISM, start=1):
            add(frame, realism.rng_for(spec, slice_index, k))
    hu, noise_sd = anatomy.image_formation(frame)
    if spec.realism:
        hu = np.clip(realism.acquisition(frame, hu, realism.rng_for(spec, slice_index, 99)), -1024.0, 3071.0)
        hu = hu.astype(np.float32)
    info = {
        "spacing_mm": frame.spacing,
        "origin_x": float(frame.cv.x[0, 0]),
        "origin_y": float(frame.cv.y[0, 0]),
        "z_mm": frame.dz,
        "noise_sd_hu": noise_sd,
    }
    return hu, frame.cv.lab, info
