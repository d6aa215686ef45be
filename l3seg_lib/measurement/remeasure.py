"""``l3seg remeasure``: recompute everything from masks edited after ``l3seg measure``.

Edit the masks that ``measure`` wrote to ``<out>/masks/`` (``<name>.nii.gz`` in ITK-SNAP with
``labels.txt``, or ``<name>.tag`` in Slice-O-Matic), in place or as copies in another folder;
``remeasure`` takes, for each measured slice, the most recently modified of the two, recomputes
areas, density, SMI and verdicts, and writes ``remeasured.csv``, ``audit.csv`` (one line per
changed slice: file, when it was edited, what changed) and ``remeasure.html`` (before and after,
verdict changes highlighted).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from l3seg_lib.config import CompositionConfig
from l3seg_lib.errors import L3SegError, L3SegInputError
from l3seg_lib.imageio.ct import slice_as_volume
from l3seg_lib.imageio.labels import read_mask_for, remap_labels
from l3seg_lib.measurement.composition import assess, measure_slice
from l3seg_lib.measurement.inputs import entry_for_source, read_entry
from l3seg_lib.measurement.writers import write_csv
from l3seg_lib.measures import MEASURES, VERDICT_KEYS
from l3seg_lib.names import read_csv_values
from l3seg_lib.reporting.html import write_remeasure_html
from l3seg_lib.reporting.reasons import verdict_status
from l3seg_lib.tissues import IDENTITY_LABEL_MAP, SLICE_O_MATIC_TAGS

COMPARED = {m.key: m.short_with_unit for m in MEASURES}
"""The measures compared before and after (:data:`l3seg_lib.measures.MEASURES`), by column."""
VERDICTS = VERDICT_KEYS


@dataclass
class RemeasureResult:
    """Result of remeasuring: the updated table, the audit of changed slices and the HTML report's path."""
    table: pd.DataFrame
    """All measured slices, recomputed where a mask was edited."""
    audit: pd.DataFrame
    """One row per changed slice: patient, slice, mask file, edited at, changes."""
    html: Path


def _edited_mask(row: pd.Series, out: Path, masks_dir: Path) -> Path | None:
    """The newest of the slice's NIfTI and tag mask in ``masks_dir`` (None if neither is there)."""
    found = []
    for key in ("mask_nifti", "mask_tag"):
        name = row.get(key)
        if isinstance(name, str) and name:
            path = masks_dir / Path(name).name
            if path.is_file():
                found.append(path)
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def _clinical(row: pd.Series) -> dict[str, Any]:
    """The clinical values of a measurements row (NaN as None) in the form the measurement takes."""
    def val(key):
        """The row's value of ``key``; None when missing or NaN."""
        v = row.get(key)
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else v
    return {"sex": val("sex"), "height_m": val("height_m"), "weight_kg": val("weight_kg"), "bmi": val("bmi_kg_m2"),
            **{k: val(k) for k in ("age_source", "height_source", "weight_source", "bmi_source")}}


def remeasure(out_dir: str | Path, masks_dir: str | Path | None = None,
              composition: CompositionConfig | None = None) -> RemeasureResult:
    """Recompute the measurements of ``out_dir`` (a ``measure`` output) from edited masks."""
    out = Path(out_dir)
    comp = composition or CompositionConfig()
    masks = Path(masks_dir) if masks_dir else out / "masks"
    csv = out / "measurements.csv"
    if not csv.is_file():
        raise L3SegInputError(csv, "not found: remeasure needs the output folder of l3seg measure")
    # the cells as measure meant them: '=HYPERLINK(...) (neutralised by csv_cell) is the ID =HYPERLINK(...)
    table = read_csv_values(csv, dtype={"patient_id": str, "source": str, "slice_id": str})
    rows, audit = [], []
    for _, row in table.iterrows():
        new = row.to_dict()
        mask = _edited_mask(row, out, masks)
        if mask is None:
            rows.append(new)
            continue
        try:
            volume = read_entry(entry_for_source(row["source"]), check_hu=False)  # as measure read it
            image = volume.slice(int(row["slice_index"]))
            raw = read_mask_for(mask, slice_as_volume(image), "edited mask")
            lmap = SLICE_O_MATIC_TAGS if mask.name.endswith(".tag") else IDENTITY_LABEL_MAP
            labels = remap_labels(raw, lmap, str(mask))[0]
        except (L3SegError, ValueError, OSError) as exc:
            new["remeasure_error"] = str(exc)
            rows.append(new)
            continue
        m = measure_slice(image.hu, labels, image.spacing_mm, comp.hu_ranges, image.hu_calibrated,
                          volume.meta.png_window_hu)
        verdict = assess(m, _clinical(row), row.get("cutoff_set") or comp.cutoffs)
        new.update(m)
        new.update({k: verdict[k] for k in (*VERDICTS, *(f"{v}_reason" for v in VERDICTS), "smi_cm2_m2")})
        if "sarcopenia_status" in new:  # the verdicts' status follows the new verdicts
            new.update(verdict_status(new))
        changes = []
        for key, name in COMPARED.items():
            a, b = row.get(key), new.get(key)
            if a is not None and b is not None and np.isfinite(float(a)) and np.isfinite(float(b)) \
                    and abs(float(a) - float(b)) >= 0.05:
                changes.append(f"{name} {float(a):.1f} -> {float(b):.1f}")
        for v in VERDICTS:
            if row.get(v) != new.get(v):
                changes.append(f"{v.replace('_', ' ')} {row.get(v)} -> {new.get(v)}")
        new["mask_edited"] = str(mask)
        rows.append(new)
        if changes:
            edited = _dt.datetime.fromtimestamp(mask.stat().st_mtime).isoformat(timespec="seconds")
            audit.append({"patient_id": row["patient_id"], "slice_index": int(row["slice_index"]), "file": str(mask),
                          "edited": edited, "remeasured": _dt.datetime.now().isoformat(timespec="seconds"),
                          "changes": "; ".join(changes),
                          "verdict_changed": any(row.get(v) != new.get(v) for v in VERDICTS)})
    after = pd.DataFrame(rows)
    audit_df = pd.DataFrame(audit, columns=["patient_id", "slice_index", "file", "edited", "remeasured", "changes",
                                            "verdict_changed"])
    write_csv(after, out / "remeasured.csv")  # atomically, cells neutralised as in measurements.csv
    write_csv(audit_df, out / "audit.csv")
    html = write_remeasure_html(out / "remeasure.html", table, after, audit_df, COMPARED, VERDICTS)
    return RemeasureResult(after, audit_df, html)
