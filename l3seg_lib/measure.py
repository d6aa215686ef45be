"""Batch measurement: a folder of CT inputs -> one table of body-composition numbers, per-patient
HTML summaries, an errors table, and (optionally) validation against reference masks.

Inputs found in the folder:

* a ``manifest.csv`` (columns ``image`` and optionally ``patient_id, slice_index,
  spacing_row_mm, spacing_col_mm, window_lo_hu, window_hi_hu``) lists them explicitly; else
* each sub-folder holding DICOM files is one series, each DICOM file directly in the folder is
  one slice, and each NIfTI file is one volume. PNG needs the manifest (no geometry in PNG).

Volumes with more than ``max_slices`` slices need ``slice_index`` in the manifest: the model is
trained for L3 slices, and measuring a whole abdomen would be meaningless.
"""

from __future__ import annotations

import json
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import yaml
from tqdm import tqdm

from .cases import clinical_for, read_clinical
from .composition import assess, get_cutoff_set, measure_slice
from .config import CompositionConfig
from .errors import L3SegError, L3SegInputError
from .io import CTVolume, read_image
from .labels import SLICE_O_MATIC_TAGS, read_label_file, remap_labels
from .metrics import TISSUES, bland_altman, slice_metrics
from .predict import Predictor
from .report import write_index_html, write_patient_html
from .viz import save_overlay_png

IDENTITY_LABELS = {"background": [0], "muscle": [1], "sat": [2], "vat": [3]}
REFERENCE_SUFFIXES = (".nii.gz", ".nii", ".png", ".dcm.tag", ".tag")


@dataclass
class MeasureInput:
    path: Path
    patient_id: str | None = None
    slice_index: int | None = None
    png_spacing: tuple[float, float] | None = None
    png_window: tuple[float, float] | None = None


@dataclass
class MeasureResult:
    measurements: pd.DataFrame
    errors: pd.DataFrame
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    out_dir: Path | None = None


def _is_dicom(path: Path) -> bool:
    try:
        return path.suffix.lower() in (".dcm", ".ima") or pydicom.misc.is_dicom(path)
    except OSError:
        return False


def discover_inputs(folder: str | Path) -> list[MeasureInput]:
    """The inputs in ``folder`` (see the module docstring for the rules)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise L3SegInputError(folder, "folder not found")
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        df = pd.read_csv(manifest, dtype={"patient_id": str, "image": str})
        if "image" not in df.columns:
            raise L3SegInputError(manifest, "needs an 'image' column")
        out = []
        for _, r in df.iterrows():
            def num(key: str) -> float | None:
                v = r.get(key)
                return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
            idx = num("slice_index")
            spacing = (num("spacing_row_mm"), num("spacing_col_mm"))
            win = (num("window_lo_hu"), num("window_hi_hu"))
            pid = r.get("patient_id")
            out.append(MeasureInput(
                folder / str(r["image"]), None if not isinstance(pid, str) or not pid.strip() else pid,
                None if idx is None else int(idx),
                None if None in spacing else spacing, None if None in win else win))
        return out
    inputs: list[MeasureInput] = []
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if path.is_dir():
            if any(_is_dicom(p) for p in path.iterdir() if p.is_file()):
                inputs.append(MeasureInput(path))
        elif name.endswith((".nii", ".nii.gz")):
            inputs.append(MeasureInput(path))
        elif name.endswith(".png"):
            inputs.append(MeasureInput(path))  # fails with a clear message: PNG needs spacing
        elif not name.endswith((".csv", ".txt", ".md", ".json", ".yaml", ".yml", ".tag")) and _is_dicom(path):
            inputs.append(MeasureInput(path))
    return inputs


def find_reference(reference_dir: Path, inp: MeasureInput, volume: CTVolume) -> Path | None:
    """Reference mask for an input: same name (or patient ID) with a mask suffix."""
    name = inp.path.name
    stems = [name]
    for ext in (".nii.gz", ".nii", ".dcm", ".png"):
        if name.lower().endswith(ext):
            stems.append(name[: -len(ext)])
    stems.append(volume.patient_id)
    for stem in stems:
        for suffix in REFERENCE_SUFFIXES:
            cand = reference_dir / f"{stem}{suffix}"
            if cand.is_file() and cand != inp.path:
                return cand
    return None


def load_label_map(path: str | Path | None) -> dict[str, list[int]] | None:
    """A label map (class name -> source values) from a YAML or JSON file."""
    if path is None:
        return None
    text = Path(path).read_text()
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict) or set(data) != {"background", "muscle", "sat", "vat"}:
        raise L3SegInputError(path, "label map needs exactly the keys background, muscle, sat, vat")
    return {k: [int(v) for v in vals] for k, vals in data.items()}


def measure_folder(folder: str | Path, model: str | Path | Predictor, out_dir: str | Path,
                   composition: CompositionConfig | None = None, clinical_csv: str | Path | None = None,
                   reference_dir: str | Path | None = None, reference_labels: dict[str, list[int]] | None = None,
                   device: str = "auto", check_hu: bool = True, max_slices: int = 5,
                   progress: bool = True) -> MeasureResult:
    """Segment and measure every input in ``folder``; see the module docstring.

    Writes ``measurements.csv`` (one row per patient and slice, units in column names),
    ``errors.csv``, ``overlays/``, ``patients/<id>.html``, ``index.html`` and, with
    ``reference_dir``, ``validation.csv`` and ``agreement.csv`` (Bland-Altman).
    """
    comp = composition or CompositionConfig()
    cutoffs = get_cutoff_set(comp.cutoffs)
    out = Path(out_dir)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    clinical = read_clinical(clinical_csv) if clinical_csv else None
    predictor = model if isinstance(model, Predictor) else Predictor(model, device)
    ref_dir = Path(reference_dir) if reference_dir else None
    inputs = discover_inputs(folder)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    validation: list[dict[str, Any]] = []
    for inp in tqdm(inputs, desc="measure", unit="input", disable=not progress, mininterval=2.0):
        try:
            kwargs = {}
            if inp.path.name.lower().endswith(".png"):
                kwargs = {"spacing_mm": inp.png_spacing, "window_hu": inp.png_window, "patient_id": inp.patient_id}
            volume = read_image(inp.path, check_hu=check_hu and not kwargs, **kwargs)
            if inp.patient_id:
                volume.patient_id = inp.patient_id
            if inp.slice_index is not None:
                if not 0 <= inp.slice_index < volume.n_slices:
                    raise L3SegInputError(inp.path, f"slice_index {inp.slice_index} is outside 0..{volume.n_slices - 1}")
                indices = [inp.slice_index]
            elif volume.n_slices > max_slices:
                raise L3SegInputError(inp.path, f"{volume.n_slices} slices: list the L3 slice in manifest.csv "
                                                f"(image, slice_index) - the model measures L3 slices only")
            else:
                indices = list(range(volume.n_slices))
            spacing = (volume.spacing_mm[1], volume.spacing_mm[2])
            preds = predictor.predict_many([volume.hu[i] for i in indices], [spacing] * len(indices))
            calibrated = bool(volume.meta.get("hu_calibrated", True))
            clin = clinical_for(volume.patient_id, clinical, volume.meta)
            for i, pred in zip(indices, preds):
                m = measure_slice(volume.hu[i], pred.labels, spacing, comp.hu_ranges, calibrated,
                                  volume.meta.get("png_window_hu"))
                verdict = assess(m, clin, cutoffs)
                overlay = out / "overlays" / f"{_safe(volume.patient_id)}_{_safe(inp.path.name)}_s{i:03d}.png"
                save_overlay_png(overlay, volume.hu[i], pred.labels)
                row = {
                    "patient_id": volume.patient_id, "source": str(inp.path), "slice_index": i,
                    "slice_id": volume.slice_ids[i], "slice_location_mm": volume.slice_locations_mm[i],
                    "pixel_spacing_row_mm": spacing[0], "pixel_spacing_col_mm": spacing[1],
                    "age_years": clin.get("age"), **verdict, **m, "inference_s": pred.seconds,
                    "overlay": str(overlay.relative_to(out)),
                }
                rows.append(row)
        except (L3SegError, ValueError, OSError, RuntimeError) as exc:
            errors.append({"source": str(inp.path), "error": str(exc)})
            continue
        except Exception as exc:  # keep the batch going; record what broke
            errors.append({"source": str(inp.path), "error": f"{type(exc).__name__}: {exc}",
                           "detail": traceback.format_exc(limit=3)})
            continue
        if ref_dir is None:
            continue
        try:  # a reference problem affects the validation only, never the measurement
            ref_path = find_reference(ref_dir, inp, volume)
            if ref_path is None:
                raise L3SegInputError(inp.path, f"no reference mask in {ref_dir} (expected "
                                                f"{inp.path.name.split('.')[0]} with {', '.join(REFERENCE_SUFFIXES)})")
            raw = read_label_file(ref_path, volume.slice(0))
            lmap = reference_labels or (SLICE_O_MATIC_TAGS if ref_path.name.endswith(".tag") else IDENTITY_LABELS)
            ref = remap_labels(raw, lmap, str(ref_path))
            if ref.shape != volume.hu.shape:
                raise L3SegInputError(ref_path, f"reference shape {ref.shape} does not match {inp.path} {volume.hu.shape}")
            for i, pred in zip(indices, preds):
                ms = slice_metrics(pred.labels, ref[i], spacing)
                validation.append({"patient_id": volume.patient_id, "source": str(inp.path), "slice_index": i, **ms})
        except (L3SegError, ValueError, OSError) as exc:
            errors.append({"source": str(inp.path), "error": f"reference not used: {exc}"})
    table = pd.DataFrame(rows)
    err = pd.DataFrame(errors, columns=["source", "error"] + (["detail"] if any("detail" in e for e in errors) else []))
    val = pd.DataFrame(validation)
    agreement = pd.DataFrame()
    if len(val):
        agreement = pd.DataFrame([
            {"tissue": t, "measure": f"{t} area (cm2)",
             **bland_altman(val[f"area_pred_{t}_cm2"].to_numpy(), val[f"area_true_{t}_cm2"].to_numpy())}
            for t in TISSUES
        ])
        val.to_csv(out / "validation.csv", index=False)
        agreement.to_csv(out / "agreement.csv", index=False)
    table.to_csv(out / "measurements.csv", index=False)
    err.to_csv(out / "errors.csv", index=False)
    meta = {"model": str(predictor.path), "cutoff_set": cutoffs.name, "cutoff_description": cutoffs.description,
            "citations": cutoffs.citation_text(), "hu_ranges": {k: list(v) for k, v in comp.hu_ranges.items()}}
    if len(table):
        for pid, group in table.groupby("patient_id", sort=True):
            write_patient_html(out / "patients" / f"{_safe(str(pid))}.html", str(pid), group, out, meta)
    write_index_html(out / "index.html", table, err, val, agreement, meta)
    return MeasureResult(table, err, val, agreement, out)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
