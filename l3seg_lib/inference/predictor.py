"""Inference: an ONNX model file -> class labels and probabilities on the original pixel grid.

:class:`Predictor` windows and resizes each slice exactly as in training, runs the model file
with onnxruntime (a cross-validation ensemble averages its members' softmax inside the graph),
resizes the probabilities back to the original grid (bilinear) and takes the most probable
class per pixel. No PyTorch is needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l3seg_lib.inference.model_file import ModelSpec, OnnxModel
from l3seg_lib.inference.postprocess import clean_labels
from l3seg_lib.preprocessing.geometry import (
    body_mask,
    image_to_model,
    make_geometry,
    probs_to_original,
)

__all__ = ["Prediction", "Predictor"]


@dataclass
class Prediction:
    """Segmentation of one slice: labels, class probabilities and inference time."""
    labels: np.ndarray
    """(rows, cols) uint8 classes 0-3 on the original grid."""
    probs: np.ndarray
    """(4, rows, cols) float32 class probabilities on the original grid."""
    seconds: float
    """Inference time per slice in s (window, resize, network, resize back)."""
    body: np.ndarray | None = None
    """The body mask of the slice (rows, cols), when it was needed."""


class Predictor:
    """Load a model file once, then segment slices.

    Args:
        model_path: an l3seg ONNX model file (``model.onnx`` of a run).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        num_threads: CPU threads (0 = all cores).
        postprocess: clean the labels anatomically (:mod:`l3seg_lib.inference.postprocess`).
    """

    def __init__(self, model_path: str | Path, device: str = "auto", num_threads: int = 0, postprocess: bool = True):
        """Load the ONNX model and read its preprocessing settings (HU window, input size, padding) from its
        metadata."""
        self.model = OnnxModel(model_path, device, num_threads)
        self.postprocess = postprocess
        self.path = self.model.path
        info = self.model.info
        self.window_hu = info.window_hu
        self.image_size = info.image_size
        self.pad_to_square = info.pad_to_square
        self.label = info.label

    @property
    def info(self) -> ModelSpec:
        """The model file's metadata."""
        return self.model.info

    def predict_hu(self, hu: np.ndarray, spacing_mm: tuple[float, float]) -> Prediction:
        """Segment one HU slice with (row, col) pixel spacing in mm."""
        return self.predict_many([hu], [spacing_mm])[0]

    def predict_many(self, hus: list[np.ndarray], spacings: list[tuple[float, float]], batch_size: int = 8
                     ) -> list[Prediction]:
        """Segment several HU slices (each with its (row, col) spacing in mm)."""
        t0 = time.perf_counter()
        need_body = self.info.pixel_mm is not None or self.postprocess
        bodies = [body_mask(h) if need_body else None for h in hus]  # once per slice, shared below
        geoms = [make_geometry(h.shape, s, self.image_size, self.pad_to_square, self.info.pixel_mm, h, b)
                 for h, s, b in zip(hus, spacings, bodies)]
        images = np.stack([image_to_model(h, g, self.window_hu) for h, g in zip(hus, geoms)]) if hus else \
            np.zeros((0, self.image_size, self.image_size), np.float32)
        probs = self.model(images, batch_size)
        out = []
        for p, g, h, s, b in zip(probs, geoms, hus, spacings, bodies):
            full = probs_to_original(p, g)
            labels = full.argmax(0).astype(np.uint8)
            if self.postprocess:
                labels = clean_labels(labels, h, s, body=b)
            out.append(Prediction(labels, full, 0.0, b))
        per = (time.perf_counter() - t0) / max(len(out), 1)
        for pr in out:
            pr.seconds = per
        return out
