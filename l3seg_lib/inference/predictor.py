"""Inference: a model file -> class labels and probabilities on the original pixel grid.

:class:`Predictor` windows and resizes each slice exactly as in training, averages the softmax of
the models in the file (a cross-validation ensemble or a single model), resizes the
probabilities back to the original grid (bilinear) and takes the most probable class per pixel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from l3seg_lib.config import CLASS_NAMES
from l3seg_lib.imageio.ct import CTImage
from l3seg_lib.inference.checkpoint import load_checkpoint, models_from_checkpoint
from l3seg_lib.inference.device import configure_threads, resolve_device
from l3seg_lib.preprocessing.geometry import image_to_model, make_geometry, probs_to_original

__all__ = ["Prediction", "Predictor", "predict_probs"]


@torch.no_grad()
def predict_probs(models: list[torch.nn.Module], images: np.ndarray, device: torch.device,
                  batch_size: int = 8) -> np.ndarray:
    """Mean softmax of ``models`` for (N, H, W) images in [0, 1] -> (N, C, H, W) float32."""
    out = []
    for m in models:
        m.eval()
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start: start + batch_size]).float()[:, None].to(device)
        probs = sum(m(x).softmax(dim=1) for m in models) / len(models)
        out.append(probs.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASS_NAMES)) + images.shape[1:], np.float32)


@dataclass
class Prediction:
    labels: np.ndarray
    """(rows, cols) uint8 classes 0-3 on the original grid."""
    probs: np.ndarray
    """(4, rows, cols) float32 class probabilities on the original grid."""
    seconds: float
    """Inference time per slice in s (window, resize, network, resize back)."""


class Predictor:
    """Load a model file once, then segment slices.

    Args:
        model_path: an l3seg model file (``model.pt`` of a run).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        num_threads: CPU threads for torch (0 = torch's default).
    """

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
        """Segment one HU slice with (row, col) pixel spacing in mm."""
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
