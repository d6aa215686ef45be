"""``l3seg predict``: segment one input (DICOM file or series, NIfTI, PNG) and write its masks,
overlays and measurements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from l3seg_lib.imageio.ct import DEFAULT_LIMITS, ReadLimits
from l3seg_lib.imageio.nifti import write_nifti_labels
from l3seg_lib.imageio.reader import read_image
from l3seg_lib.inference.predictor import Predictor
from l3seg_lib.localize.selection import TOTALSEGMENTATOR_L3, requested_slices
from l3seg_lib.measurement import stages
from l3seg_lib.names import atomic_path, csv_cell, input_stem
from l3seg_lib.reporting.overlays import save_overlay_png
from l3seg_lib.units import slice_spacing_mm


def predict_path(input_path: str | Path, model: str | Path | Predictor, out_dir: str | Path,
                 slices: list[int] | None = None, vertebra_labels: str | Path | None = None,
                 vertebra_label: int = TOTALSEGMENTATOR_L3, margin: int = 0, device: str = "auto",
                 check_hu: bool = True, png_spacing: tuple[float, float] | None = None,
                 png_window: tuple[float, float] | None = None, postprocess: bool = True,
                 min_matrix: int = DEFAULT_LIMITS.min_matrix, min_fov_mm: float = DEFAULT_LIMITS.min_fov_mm
                 ) -> pd.DataFrame:
    """Segment an input and write, under ``out_dir``: ``<name>_labels.nii.gz`` (the whole input
    grid, unsegmented slices 0), per slice ``<name>_s<index>_mask.png`` (values 0-3) and
    ``..._overlay.png``, and ``areas.csv``: one row per slice, measured as ``l3seg measure``
    measures it (stages ``segment`` and ``measure`` of :mod:`.stages`, default HU ranges) and
    named as in ``measurements.csv`` (``pixel_spacing_row_mm``, ``sma_cm2``, ``sma_refined_cm2``,
    ``muscle_hu_mean``, ..., ``inference_s``, ``model``).
    An image below ``min_matrix`` pixels or ``min_fov_mm`` mm of field of view is refused
    (:func:`~l3seg_lib.imageio.ct.check_plausible_image`) before the model runs. Each file is
    written under a temporary name and renamed into place when complete."""
    input_path = Path(input_path)
    out = Path(out_dir)
    predictor = model if isinstance(model, Predictor) else Predictor(model, device, postprocess=postprocess)
    limits = ReadLimits(min_matrix=min_matrix, min_fov_mm=min_fov_mm)
    png = {"spacing_mm": png_spacing, "window_hu": png_window} if input_path.name.lower().endswith(".png") else {}
    volume = read_image(input_path, check_hu=check_hu, limits=limits, check_size=True, **png)
    out.mkdir(parents=True, exist_ok=True)
    indices = requested_slices(volume, slices, vertebra_labels, vertebra_label, margin)
    spacing = slice_spacing_mm(volume.spacing_mm)
    preds = stages.segment(predictor, volume, indices)
    stem = input_stem(input_path)
    full = np.zeros(volume.hu.shape, dtype=np.uint8)
    rows = []
    for i, pred in zip(indices, preds):
        full[i] = pred.labels
        base = out / f"{stem}_s{i:03d}"
        with atomic_path(f"{base}_mask.png") as tmp:
            Image.fromarray(pred.labels).save(tmp, format="PNG")
        save_overlay_png(f"{base}_overlay.png", volume.hu[i], pred.labels)
        rows.append({
            "patient_id": volume.patient_id, "source": str(input_path), "slice_index": i,
            "slice_id": volume.slice_ids[i], "pixel_spacing_row_mm": spacing[0], "pixel_spacing_col_mm": spacing[1],
            **stages.measure(volume, i, pred.labels, None),
            "hu_calibrated": volume.meta.hu_calibrated,
            "inference_s": pred.seconds, "model": predictor.label,
        })
    write_nifti_labels(full, volume.affine, out / f"{stem}_labels.nii.gz")
    df = pd.DataFrame(rows)
    with atomic_path(out / "areas.csv") as tmp:
        df.map(csv_cell).to_csv(tmp, index=False)
    return df
