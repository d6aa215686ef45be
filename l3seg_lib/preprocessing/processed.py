"""The processed data set on disk: every case windowed and resized once, plus its manifest.

``<dir>/cases/<case_id>.npz`` and ``<dir>/manifest.csv`` (one row per slice: IDs, source paths,
original and effective spacing in mm, padding, the patient's clinical variables), and
``<dir>/preprocess.json``, the record of the params that made the folder (``preprocess`` and, for
the built-in data, the ``source`` settings): :func:`prepare_builtin` rebuilds a folder whose
record differs from the params in force.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from l3seg_lib.config import Params, PreprocessConfig
from l3seg_lib.data.cases import Case, iter_manifest
from l3seg_lib.data.clinical import clinical_for, read_clinical
from l3seg_lib.data.manifest import read_manifest
from l3seg_lib.names import safe_name
from l3seg_lib.preprocessing.geometry import (
    image_to_model,
    make_geometry,
    mask_to_model,
)

PROCESSED_MANIFEST = "manifest.csv"
PROCESSED_RECORD = "preprocess.json"
"""The params a processed folder was made with: ``{"preprocess": ..., "source": ...}``."""
RAW_RECORD = "phantom.json"
"""The phantom settings a built-in raw folder was generated with."""


def _plain(value: Any) -> Any:
    """``value`` made JSON-plain (a round trip through JSON; non-JSON values as floats)."""
    return json.loads(json.dumps(value, default=float))


def processed_record(out_dir: str | Path) -> dict[str, Any] | None:
    """The params record of a processed folder (None when it has none or an unreadable one)."""
    path = Path(out_dir) / PROCESSED_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _record(cfg: PreprocessConfig, source: dict[str, Any] | None) -> dict[str, Any]:
    """Record of the preprocessing settings and the data source, JSON-plain."""
    return _plain({"preprocess": asdict(cfg), "source": source or {}})


def export_processed(
    cases: Iterable[Case],
    out_dir: str | Path,
    cfg: PreprocessConfig,
    clinical: pd.DataFrame | None = None,
    total: int | None = None,
    source: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Window and resize every case and write ``cases/<case_id>.npz`` plus ``manifest.csv``.

    Each npz holds ``image`` (float32 [0, 1], model size), ``mask`` (uint8, model size),
    ``hu`` (int16 HU, original size), ``mask_orig`` (uint8, original size) and ``affine``.
    The manifest has one row per slice: IDs, source paths, original and effective spacing (mm),
    padding, and the patient's clinical variables. ``preprocess.json`` records ``cfg`` and
    ``source`` (JSON-plain settings of where the cases came from), written last.
    """
    out_dir = Path(out_dir)
    (out_dir / "cases").mkdir(parents=True, exist_ok=True)
    rows = []
    seen: set[str] = set()
    for case in tqdm(cases, total=total, desc="preprocess", unit="slice", mininterval=2.0):
        img = case.image
        geom = make_geometry(img.hu.shape, img.spacing_mm, cfg.image_size, cfg.pad_to_square, cfg.pixel_mm, img.hu)
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
        file = f"cases/{safe_name(case_id)}.npz"
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
            "scaled_rows": geom.scaled[0] if geom.scaled else 0, "scaled_cols": geom.scaled[1] if geom.scaled else 0,
            "offset_top": geom.offset[0], "offset_left": geom.offset[1],
            "eff_spacing_row_mm": eff[0], "eff_spacing_col_mm": eff[1],
            "slice_location_mm": img.slice_location_mm, "hu_calibrated": img.hu_calibrated,
            **clin,
        })
    if not rows:
        raise ValueError("no cases to preprocess")
    manifest = pd.DataFrame(rows)
    manifest.to_csv(out_dir / PROCESSED_MANIFEST, index=False)
    (out_dir / PROCESSED_RECORD).write_text(json.dumps(_record(cfg, source), indent=2))
    return manifest


def read_processed_manifest(out_dir: str | Path) -> pd.DataFrame:
    """The processed-slice manifest of ``out_dir``; FileNotFoundError when preprocessing has not run."""
    path = Path(out_dir) / PROCESSED_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: processed manifest not found; run the preprocessing step first")
    return pd.read_csv(path, dtype={"patient_id": str, "slice_id": str, "case_id": str})


def load_arrays(out_dir: str | Path, row: pd.Series | dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays stored for one processed case."""
    with np.load(Path(out_dir) / row["file"]) as z:
        return {k: z[k] for k in z.files}


def prepare_builtin(raw_dir: str | Path, processed_dir: str | Path, params: Params, progress: bool = True
                    ) -> pd.DataFrame:
    """The built-in synthetic data set of ``params.data.phantom``, generated into ``raw_dir`` and
    preprocessed (``params.preprocess``) into ``processed_dir``; returns the processed manifest.

    A processed folder made with these params (its ``preprocess.json``) is read as it is; one made
    with other params (another ``pixel_mm``, another phantom, ...) is rebuilt, and the raw folder
    regenerated when it was generated with another phantom."""
    # imported here: reading processed data never needs the generator
    from l3seg_lib import phantom

    raw, processed = Path(raw_dir), Path(processed_dir)
    ph = params.data.phantom
    source = _plain({"phantom": asdict(ph), "label_map": params.data.label_map, "check_hu": params.data.check_hu})
    wanted = _record(params.preprocess, source)
    if (processed / PROCESSED_MANIFEST).is_file() and processed_record(processed) == wanted:
        return read_processed_manifest(processed)
    for stale in (processed / "cases", processed / PROCESSED_MANIFEST, processed / PROCESSED_RECORD):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    raw_record = raw / RAW_RECORD
    made_with = json.loads(raw_record.read_text()) if raw_record.is_file() else None
    if made_with != source["phantom"] or not (raw / "manifest.csv").is_file():
        if made_with is not None:  # a raw folder this function generated with another phantom
            shutil.rmtree(raw)
        phantom.generate(raw, ph.n_patients, ph.seed, ph.matrix, tuple(ph.slices_per_patient), progress, ph.realism)
        raw_record.write_text(json.dumps(source["phantom"], indent=2))
    export_processed(iter_manifest(read_manifest(raw / "manifest.csv"), params.data), processed, params.preprocess,
                     read_clinical(raw / "clinical.csv"), source=source)
    return read_processed_manifest(processed)
