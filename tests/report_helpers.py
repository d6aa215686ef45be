"""A synthetic measured batch for the report tests and benchmark: ``n`` synthetic patients (ids
``SYN…``, some with two slices, some with a long DICOM UID as id), review reasons of every
severity, a few refused inputs, written by the real writers (overlays, thumbnails, CSV, pages)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from helpers import body_phantom
from l3seg_lib.measurement.composition import assess
from l3seg_lib.measurement.result import InputResult, SliceResult
from l3seg_lib.measurement.writers import OverlayWriter, write_outputs

REASONS = (
    "body cut by the field of view: 27% of the body outline lies on the edge of the image or of the reconstruction "
    "circle, so SAT (and perhaps muscle) beyond it is missing",
    "vertebral level not verified (a single slice was given): check that the slice lies at L3, or name it with a "
    "manifest's slice_index, or give the whole series so that the localiser finds L3",
    "IV contrast (a round vessel at 250 HU): contrast raises muscle density, so read the myosteatosis verdict with care",
    "slice thickness 6 mm (> 5 mm): partial volume blurs fat and muscle",
    "L3 found with medium confidence: the iliac crests were not in view; the level rests on two anchors",
)
REFUSALS = (
    ("{d}/scan_0007/IM0001.dcm", "{d}/scan_0007/IM0001.dcm: not a DICOM file (File is missing DICOM File Meta "
     "Information header or the 'DICM' prefix is missing from the header. Use force=True to force reading.)", False, ""),
    ("{d}/series_chest", "{d}/series_chest: L3 not located, listed for review: the volume covers only 40 mm along the "
     "body axis; counting vertebrae needs several of them in view (picture: localizer/series_chest.png)", True,
     "localizer/series_chest.png"),
    ("{d}/export.png", "{d}/export.png: no air found at about -1000 HU: this does not look like a CT slice in HU. "
     "Set data.check_hu: false (--no-hu-check) only if the field of view truly contains no air.", False, ""),
)
META = {"hu_ranges": {"muscle": (-29, 150), "sat": (-190, -30), "vat": (-150, -50), "imat": (-190, -30)},
        "cutoff_set": "martin2013", "cutoff_description": "Martin 2013", "citations": "[1] Martin L, et al. 2013.",
        "model": "synthetic test model"}


def synthetic_batch(out: Path, n: int = 40, seed: int = 0, source_dir: str = "/data/hospital/incoming") -> Path:
    """Write a measured batch of ``n`` synthetic patients to ``out`` (index.html, patients/,
    overlays/, measurements.csv, errors.csv); the input paths lie under ``source_dir`` (a machine
    path no page may show)."""
    rng = np.random.default_rng(seed)
    hu, labels = body_phantom(96, 96)
    writer = OverlayWriter(out)
    results = []
    for i in range(n):
        pid = f"SYN{i:04d}" if i % 50 != 7 else f"1.2.826.0.1.3680043.8.498.{10**30 + i}"
        sex = "F" if i % 2 else "M"
        height = None if i % 17 == 3 else float(rng.normal(1.64 if sex == "F" else 1.77, 0.06))
        weight = float(rng.normal(72, 14))
        source = f"{source_dir}/{pid}"
        res = InputResult(source)
        for k in range(2 if i % 20 == 5 else 1):
            sma = float(rng.normal(115 if sex == "F" else 160, 25))
            measures = {"sma_cm2": sma * 1.08, "sat_cm2": float(rng.gamma(4, 45)), "vat_cm2": float(rng.gamma(3, 40)),
                        "sma_refined_cm2": sma, "imat_cm2": float(rng.gamma(2, 5)),
                        "muscle_refined_hu_mean": float(rng.normal(36, 9)), "muscle_refined_hu_sd": 18.0,
                        "muscle_refined_hu_median": 38.0, "muscle_hu_mean": 30.0, "muscle_hu_median": 33.0,
                        "muscle_hu_sd": 22.0, "hu_calibrated": True}
            measures.update(sat_refined_cm2=measures["sat_cm2"] * 0.95, vat_refined_cm2=measures["vat_cm2"] * 0.9)
            measures.update(tat_refined_cm2=measures["sat_refined_cm2"] + measures["vat_refined_cm2"],
                            tat_cm2=measures["sat_cm2"] + measures["vat_cm2"],
                            vat_sat_ratio=measures["vat_cm2"] / measures["sat_cm2"],
                            vat_sat_ratio_refined=measures["vat_refined_cm2"] / measures["sat_refined_cm2"])
            clinical = {"sex": sex, "height_m": height, "weight_kg": weight}
            r = SliceResult(patient_id=pid, source=source, slice_index=40 + k, slice_id=f"{pid}-{k}",
                            slice_location_mm=-120.0 - 3 * k, pixel_spacing_row_mm=4.0, pixel_spacing_col_mm=4.0,
                            age_years=float(50 + i % 30))
            r.update(assess(measures, clinical))
            r.update(measures)
            reasons = [REASONS[j] for j in range(len(REASONS)) if rng.random() < (0.25, 0.15, 0.1, 0.05, 0.1)[j]]
            level = ("as given (level not checked)" if REASONS[1] in reasons else "localiser")
            r.update({"level_source": level, "l3_confidence": "" if level != "localiser" else
                      ("medium" if REASONS[4] in reasons else "high"), "l3_method": "vertebra count", "input_slices": 1,
                      "model": "synthetic"})
            r.review_required, r.review_reasons = bool(reasons), "; ".join(reasons)
            r.overlay = writer.submit(f"{pid}_s{k}", hu, labels, (4.0, 4.0), (-190.0, -30.0))
            res.rows.append(r)
        results.append(res)
    for source, error, review, picture in REFUSALS:
        src = source.format(d=source_dir)
        results.append(InputResult(src, status="review" if review else "refused", errors=[
            {"source": src, "error": error.format(d=source_dir), "review": review, "picture": picture}]))
    writer.close()
    picture = out / "localizer" / "series_chest.png"  # the refused series' review picture
    picture.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((60, 40), 90, np.uint8)).save(picture)
    write_outputs(out, results, META, images=writer.images)
    return out
