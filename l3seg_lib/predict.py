"""Inference: a trained model file -> label masks at the original resolution.

``Predictor`` windows and resizes each slice exactly as in training, averages the softmax of the
models in the file (a cross-validation ensemble or a single model), resizes the probabilities
back to the original grid (bilinear) and takes the most probable class per pixel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .errors import L3SegInputError
from .io import CTImage, CTVolume, read_image, write_nifti_labels
from .labels import read_label_file, select_vertebra_slices
from .metrics import TISSUES, areas_cm2
from .preprocess import image_to_model, make_geometry, probs_to_original
from .train import configure_threads, load_checkpoint, models_from_checkpoint, predict_probs, resolve_device
from .viz import save_overlay_png


@dataclass
class Prediction:
    labels: np.ndarray
    """(rows, cols) uint8 classes 0-3 on the original grid."""
    probs: np.ndarray
    """(4, rows, cols) float32 class probabilities on the original grid."""
    seconds: float


class Predictor:
    """Load a model file once, then segment slices."""

    def __init__(self, model_path: str | Path, device: str = "auto", num_threads: int = 0):
        configure_threads(num_threads)
        self.path = Path(model_path)
        self.checkpoint = load_checkpoint(model_path)
        self.device = resolve_device(device)
        self.models = models_from_checkpoint(self.checkpoint, self.device)
        self.window_hu = tuple(self.checkpoint["window_hu"])
        self.image_size = int(self.checkpoint["image_size"])
        self.pad_to_square = bool(self.checkpoint["pad_to_square"])
        self.label = self.checkpoint.get("label", "model")

    def predict_hu(self, hu: np.ndarray, spacing_mm: tuple[float, float]) -> Prediction:
        return self.predict_many([hu], [spacing_mm])[0]

    def predict_many(self, hus: list[np.ndarray], spacings: list[tuple[float, float]], batch_size: int = 8
                     ) -> list[Prediction]:
        """Segment several HU slices (each with its (row, col) spacing in mm)."""
        t0 = time.perf_counter()
        geoms = [make_geometry(h.shape, s, self.image_size, self.pad_to_square) for h, s in zip(hus, spacings)]
        images = np.stack([image_to_model(h, g, self.window_hu) for h, g in zip(hus, geoms)]) if hus else \
            np.zeros((0, self.image_size, self.image_size), np.float32)
        probs = predict_probs(self.models, images, self.device, batch_size)
        out = []
        for p, g in zip(probs, geoms):
            full = probs_to_original(p, g)
            out.append(Prediction(full.argmax(0).astype(np.uint8), full, 0.0))
        per = (time.perf_counter() - t0) / max(len(out), 1)
        for pr in out:
            pr.seconds = per
        return out

    def predict_image(self, image: CTImage) -> Prediction:
        return self.predict_hu(image.hu, image.spacing_mm)


def choose_slices(volume: CTVolume, slices: list[int] | None = None, vertebra_labels: str | Path | None = None,
                  vertebra_label: int = 29, margin: int = 0) -> list[int]:
    """Slices to segment: explicit indices, the middle of a vertebra (+- margin) from a label
    volume aligned with the image, or every slice."""
    if slices:
        for i in slices:
            if not 0 <= i < volume.n_slices:
                raise L3SegInputError(volume.source, f"slice {i} is outside 0..{volume.n_slices - 1}")
        return list(slices)
    if vertebra_labels is not None:
        labels = read_label_file(vertebra_labels)
        if labels.shape != volume.hu.shape:
            raise L3SegInputError(vertebra_labels, f"label volume shape {labels.shape} does not match the image "
                                                   f"{volume.source} shape {volume.hu.shape}")
        return select_vertebra_slices(labels, vertebra_label, margin, str(vertebra_labels))[1]
    return list(range(volume.n_slices))


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".dcm", ".png"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def predict_path(input_path: str | Path, model: str | Path | Predictor, out_dir: str | Path,
                 slices: list[int] | None = None, vertebra_labels: str | Path | None = None,
                 vertebra_label: int = 29, margin: int = 0, device: str = "auto", check_hu: bool = True,
                 png_spacing: tuple[float, float] | None = None, png_window: tuple[float, float] | None = None
                 ) -> pd.DataFrame:
    """Segment an input and write, under ``out_dir``: ``<name>_labels.nii.gz`` (the whole input
    grid, unsegmented slices 0), per slice ``<name>_s<index>_mask.png`` (values 0-3) and
    ``..._overlay.png``, and ``areas.csv`` (one row per slice, areas in cm2, muscle mean HU)."""
    input_path = Path(input_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictor = model if isinstance(model, Predictor) else Predictor(model, device)
    volume = read_image(input_path, check_hu=check_hu, spacing_mm=png_spacing, window_hu=png_window) \
        if input_path.name.lower().endswith(".png") else read_image(input_path, check_hu=check_hu)
    indices = choose_slices(volume, slices, vertebra_labels, vertebra_label, margin)
    spacing = (volume.spacing_mm[1], volume.spacing_mm[2])
    preds = predictor.predict_many([volume.hu[i] for i in indices], [spacing] * len(indices))
    stem = _stem(input_path)
    full = np.zeros(volume.hu.shape, dtype=np.uint8)
    rows = []
    for i, pred in zip(indices, preds):
        full[i] = pred.labels
        base = out / f"{stem}_s{i:03d}"
        Image.fromarray(pred.labels).save(f"{base}_mask.png")
        save_overlay_png(f"{base}_overlay.png", volume.hu[i], pred.labels)
        area = areas_cm2(pred.labels, spacing)
        muscle = pred.labels == 1
        rows.append({
            "source": str(input_path), "patient_id": volume.patient_id, "slice_index": i,
            "slice_id": volume.slice_ids[i], "spacing_row_mm": spacing[0], "spacing_col_mm": spacing[1],
            **{f"{name}_area_cm2": round(float(area[c]), 3) for c, name in enumerate(TISSUES, start=1)},
            "muscle_mean_hu": round(float(volume.hu[i][muscle].mean()), 2) if muscle.any() else np.nan,
            "hu_calibrated": bool(volume.meta.get("hu_calibrated", True)),
            "seconds": round(pred.seconds, 4), "model": str(predictor.path),
        })
    write_nifti_labels(full, volume.affine, out / f"{stem}_labels.nii.gz")
    df = pd.DataFrame(rows)
    df.to_csv(out / "areas.csv", index=False)
    return df
