"""Repeat-scan error of the shipped model on phantom patients scanned twice without change.

Each patient is rendered twice (``phantom.followup``: the second scan draws bowel, vessels and
image noise afresh; anatomy unchanged), both studies are measured with ``measure_folder`` and the
time-point values (median over the 3 L3 slices) compared: SEM = SD(differences) / sqrt(2), relative
(SD of log ratios) for areas, in HU for density. ``serial.PHANTOM_RETEST`` holds the figures.

    python experiments/serial_retest.py --patients 12 --matrix 512 --out runs/serial_retest
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd

from l3seg_lib.measurement.orchestration import measure_folder
from l3seg_lib.measurement.options import MeasureOptions
from l3seg_lib.models import default_model_path
from l3seg_lib.measurement.serial import MEASURES, method_error, time_points
from l3seg_lib.phantom.followup import Visit, generate_followups


def main() -> None:
    """Generate, measure and print the repeat-scan SEM per measure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=12)
    ap.add_argument("--matrix", type=int, default=512)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="runs/serial_retest")
    args = ap.parse_args()
    out = Path(args.out)
    generate_followups(out / "data", [Visit(0), Visit(7)], n_patients=args.patients, seed=args.seed,
                       matrix=args.matrix)
    model = default_model_path()
    res = measure_folder(out / "data" / "dicom", model, out / "measured", MeasureOptions(progress=False))
    tp = time_points(res.measurements)
    tp = tp[tp["status"] == "time point"]
    rows = []
    for m in MEASURES:
        wide = tp.pivot(index="patient_id", columns="index", values=m.column).dropna()
        a, b = wide[0].to_numpy(float), wide[1].to_numpy(float)
        if m.kind == "area":
            ok = (a > 0) & (b > 0)
            d = np.log(b[ok] / a[ok])
            sem, unit = float(np.std(d, ddof=1) / math.sqrt(2)), "fraction"
        else:
            d = b - a
            sem, unit = float(np.std(d, ddof=1) / math.sqrt(2)), "HU"
        rows.append({"measure": m.column, "n": len(d), "mean_difference": float(np.mean(d)), "retest_sem": sem,
                     "unit": unit, "slice_model": method_error(tp)[m.column].describe()})
    table = pd.DataFrame(rows)
    table.to_csv(out / "retest.csv", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
