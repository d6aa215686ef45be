"""HU windowing, resizing to the model size and back, and the processed data set on disk.

Resizing keeps track of geometry: an image of (rows, cols) pixels at (row_mm, col_mm) is
optionally padded with air to a square, then resized to ``size x size``; each model pixel then
covers ``eff_spacing_mm = (row_mm * padded_rows / size, col_mm * padded_cols / size)``, so areas
computed at the model size stay in cm2. :func:`probs_to_original` undoes both steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from .cases import Case, clinical_for
from .config import PreprocessConfig
from .io import AIR_HU

MANIFEST_NAME = "manifest.csv"


def window(hu: np.ndarray, lo: float = -200.0, hi: float = 800.0) -> np.ndarray:
    """Clip HU to [lo, hi] and scale to [0, 1] (float32)."""
    if not lo < hi:
        raise ValueError(f"window [{lo}, {hi}] HU is empty")
    out = (np.clip(hu.astype(np.float32), lo, hi) - lo) / (hi - lo)
    return out.astype(np.float32)


@dataclass(frozen=True)
class Geometry:
    """How an original slice maps onto the square model grid."""

    rows: int
    cols: int
    spacing_mm: tuple[float, float]
    """Original (row, col) pixel spacing in mm."""
    size: int
    pad: tuple[int, int, int, int]
    """Air padding (top, bottom, left, right) in original pixels."""

    @property
    def padded_shape(self) -> tuple[int, int]:
        top, bottom, left, right = self.pad
        return self.rows + top + bottom, self.cols + left + right

    @property
    def eff_spacing_mm(self) -> tuple[float, float]:
        """(row, col) mm per pixel at the model size."""
        pr, pc = self.padded_shape
        return self.spacing_mm[0] * pr / self.size, self.spacing_mm[1] * pc / self.size


def make_geometry(shape: tuple[int, int], spacing_mm: tuple[float, float], size: int, pad_to_square: bool = True) -> Geometry:
    rows, cols = int(shape[0]), int(shape[1])
    pad = (0, 0, 0, 0)
    if pad_to_square and rows != cols:
        n = max(rows, cols)
        dr, dc = n - rows, n - cols
        pad = (dr // 2, dr - dr // 2, dc // 2, dc - dc // 2)
    return Geometry(rows, cols, (float(spacing_mm[0]), float(spacing_mm[1])), int(size), pad)


def _pad(arr: np.ndarray, geom: Geometry, value: float) -> np.ndarray:
    top, bottom, left, right = geom.pad
    if not any(geom.pad):
        return arr
    return np.pad(arr, ((top, bottom), (left, right)), mode="constant", constant_values=value)


def image_to_model(hu: np.ndarray, geom: Geometry, window_hu: tuple[float, float]) -> np.ndarray:
    """HU slice -> windowed [0, 1] float32 image of ``size x size`` (bilinear)."""
    img = window(_pad(hu, geom, AIR_HU), *window_hu)
    return cv2.resize(img, (geom.size, geom.size), interpolation=cv2.INTER_LINEAR)


def mask_to_model(mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Class mask -> ``size x size`` uint8 (nearest neighbour)."""
    m = _pad(mask.astype(np.uint8), geom, 0)
    return cv2.resize(m, (geom.size, geom.size), interpolation=cv2.INTER_NEAREST_EXACT)


def probs_to_original(probs: np.ndarray, geom: Geometry) -> np.ndarray:
    """Class probabilities (C, size, size) -> (C, rows, cols) on the original grid (bilinear)."""
    pr, pc = geom.padded_shape
    hwc = np.ascontiguousarray(np.moveaxis(probs.astype(np.float32), 0, -1))
    up = cv2.resize(hwc, (pc, pr), interpolation=cv2.INTER_LINEAR)
    if up.ndim == 2:
        up = up[:, :, None]
    top, _, left, _ = geom.pad
    up = up[top: top + geom.rows, left: left + geom.cols]
    return np.moveaxis(up, -1, 0)


def labels_to_original(labels: np.ndarray, geom: Geometry) -> np.ndarray:
    """Class labels (size, size) -> (rows, cols) (nearest neighbour)."""
    pr, pc = geom.padded_shape
    up = cv2.resize(labels.astype(np.uint8), (pc, pr), interpolation=cv2.INTER_NEAREST_EXACT)
    top, _, left, _ = geom.pad
    return up[top: top + geom.rows, left: left + geom.cols]


# --------------------------------------------------------------------------------------------
# processed data set


def geometry_from_row(row: pd.Series | dict[str, Any]) -> Geometry:
    return Geometry(
        int(row["rows"]), int(row["cols"]), (float(row["spacing_row_mm"]), float(row["spacing_col_mm"])),
        int(row["image_size"]),
        (int(row["pad_top"]), int(row["pad_bottom"]), int(row["pad_left"]), int(row["pad_right"])),
    )


def export_processed(
    cases: Iterable[Case],
    out_dir: str | Path,
    cfg: PreprocessConfig,
    clinical: pd.DataFrame | None = None,
    total: int | None = None,
) -> pd.DataFrame:
    """Window and resize every case and write ``cases/<case_id>.npz`` plus ``manifest.csv``.

    Each npz holds ``image`` (float32 [0, 1], model size), ``mask`` (uint8, model size),
    ``hu`` (int16 HU, original size), ``mask_orig`` (uint8, original size) and ``affine``.
    The manifest has one row per slice: IDs, source paths, original and effective spacing (mm),
    padding, and the patient's clinical variables.
    """
    out_dir = Path(out_dir)
    (out_dir / "cases").mkdir(parents=True, exist_ok=True)
    rows = []
    seen: set[str] = set()
    for case in tqdm(cases, total=total, desc="preprocess", unit="slice", mininterval=2.0):
        img = case.image
        geom = make_geometry(img.hu.shape, img.spacing_mm, cfg.image_size, cfg.pad_to_square)
        case_id = f"{img.patient_id}__{img.slice_id}"
        if case_id in seen:
            raise ValueError(f"{img.source}: slice {img.slice_id} of patient {img.patient_id} is listed twice")
        seen.add(case_id)
        arrays = {
            "image": image_to_model(img.hu, geom, cfg.window_hu),
            "hu": np.clip(np.round(img.hu), -32768, 32767).astype(np.int16),
            "affine": img.affine.astype(np.float64),
        }
        if case.mask is not None:
            arrays["mask"] = mask_to_model(case.mask, geom)
            arrays["mask_orig"] = case.mask.astype(np.uint8)
        file = f"cases/{_safe(case_id)}.npz"
        np.savez_compressed(out_dir / file, **arrays)
        clin = clinical_for(img.patient_id, clinical, img.meta)
        eff = geom.eff_spacing_mm
        rows.append({
            "case_id": case_id, "patient_id": img.patient_id, "slice_id": img.slice_id, "file": file,
            "source_image": img.source, "source_mask": case.mask_source, "has_mask": case.mask is not None,
            "rows": geom.rows, "cols": geom.cols,
            "spacing_row_mm": geom.spacing_mm[0], "spacing_col_mm": geom.spacing_mm[1],
            "image_size": geom.size, "pad_top": geom.pad[0], "pad_bottom": geom.pad[1],
            "pad_left": geom.pad[2], "pad_right": geom.pad[3],
            "eff_spacing_row_mm": eff[0], "eff_spacing_col_mm": eff[1],
            "slice_location_mm": img.slice_location_mm, "hu_calibrated": img.hu_calibrated,
            **clin,
        })
    if not rows:
        raise ValueError("no cases to preprocess")
    manifest = pd.DataFrame(rows)
    manifest.to_csv(out_dir / MANIFEST_NAME, index=False)
    (out_dir / "preprocess.json").write_text(json.dumps(asdict(cfg), indent=2))
    return manifest


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def read_processed_manifest(out_dir: str | Path) -> pd.DataFrame:
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: processed manifest not found; run the preprocessing step first")
    return pd.read_csv(path, dtype={"patient_id": str, "slice_id": str, "case_id": str})


def load_arrays(out_dir: str | Path, row: pd.Series | dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays stored for one processed case."""
    with np.load(Path(out_dir) / row["file"]) as z:
        return {k: z[k] for k in z.files}
