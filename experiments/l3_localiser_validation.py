"""Validation of the L3 localiser on synthetic torsos with varied coverage and anatomy, and on the
real example CT (a study script, run from the repository root):

    .venv/bin/python experiments/l3_localiser_validation.py [--real ../shared/data/totalsegmentator_example]

Prints one row per case: what the localiser said, the chosen slice against the true L3 body, the
distance from mid-L3 in slices, and for "cannot tell" cases the reason. Cases without L3 (or
without what is needed to count to it) must be flagged, never measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from l3seg_lib.localize.l3 import locate_l3
from l3seg_lib.phantom.torso import TorsoSpec, make_torso

WIDE = {"matrix": 320}
"""A 512 mm field of view at the default 1.6 mm pixels: room for arms down or a shifted patient."""
CURVED = {"table": "curved"}

CASES = {
    # name: (TorsoSpec changes, whether L3 can be found)
    "typical, 3 mm": ({}, True),
    "1 mm slices": ({"slice_mm": 1.0}, True),
    "5 mm slices": ({"slice_mm": 5.0}, True),
    "small vertebrae, low bone density": ({"scale": 0.88, "cancellous_hu": 140.0, "seed": 3}, True),
    "strong lordosis, noisy": ({"lordosis_mm": 20.0, "noise_hu": 25.0, "seed": 4}, True),
    "T12 out of the field of view": ({"z_to": 170.0, "seed": 5}, True),
    "L3 absent (field of view above it)": ({"z_from": 125.0, "seed": 6}, False),
    "L3 absent (field of view below it)": ({"z_to": 75.0, "seed": 7}, False),
    "sacrum out of view (starts in L4): counted down from T12": ({"z_from": 55.0, "seed": 8}, True),
    "six lumbar vertebrae": ({"n_lumbar": 6, "z_to": 300.0, "seed": 9}, False),
    "eleven rib pairs": ({"n_rib_pairs": 11, "seed": 10}, False),
    # around the patient, as on real scans (issue 21): the couch, arms down, off-centre placement, contrast
    "curved table touching, mattress": ({**CURVED, "table_gap_mm": 0.0, "table_pad_mm": 6.0, "seed": 11}, True),
    "curved table 15 mm below": ({**CURVED, "table_gap_mm": 15.0, "seed": 12}, True),
    "curved table 35 mm below, thick couch": ({**CURVED, "table_gap_mm": 35.0, "table_core_mm": 40.0, "seed": 13},
                                              True),
    "flat table": ({"table": "flat", "table_gap_mm": 10.0, "table_core_mm": 30.0, "seed": 14}, True),
    "arms down": ({**WIDE, "arms": "down", "seed": 15}, True),
    "arms down touching, elbows at L3": ({**WIDE, "arms": "down", "arm_gap_mm": 0.0, "elbow_mm": 95.0, "seed": 16},
                                         True),
    "off-centre, rolled": ({**WIDE, "shift_mm": (55.0, -35.0), "rotate_deg": 8.0, "seed": 17}, True),
    "contrast aorta": ({"contrast_hu": 300.0, "seed": 18}, True),
    "all combined (couch, arms, off-centre, rolled, contrast)": (
        {"matrix": 350, **CURVED, "table_gap_mm": 15.0, "table_pad_mm": 4.0, "arms": "down", "shift_mm": (30.0, 20.0),
         "rotate_deg": 6.0, "contrast_hu": 300.0, "seed": 19}, True),
    "couch and arms, L3 absent (view above)": ({**WIDE, **CURVED, "table_gap_mm": 10.0, "arms": "down", "z_from": 125.0,
                                                "seed": 20}, False),
    "couch and arms, L3 absent (view below)": ({**WIDE, **CURVED, "table_gap_mm": 10.0, "arms": "down", "z_to": 75.0,
                                                "seed": 21}, False),
}


def run(real: Path | None = None, seeds: int = 1) -> pd.DataFrame:
    rows = []
    for name, (changes, findable) in CASES.items():
        for s in range(seeds):
            spec = TorsoSpec(**{**changes, "seed": changes.get("seed", 0) + 100 * s})
            torso = make_torso(spec)
            loc = locate_l3(torso.as_volume())
            truth = torso.slices_of("L3") if "L3" in torso.vertebrae else None
            row = {"case": name, "seed": spec.seed, "slices": len(torso.z_mm), "slice_mm": spec.slice_mm,
                   "expected": "found" if findable else "cannot tell", "status": loc.status,
                   "confidence": loc.confidence, "true L3": truth, "chosen": loc.slice_index,
                   "seconds": round(loc.seconds, 3), "reason": loc.reason}
            if loc.found and truth:
                mid = (truth[0] + truth[1]) / 2
                row["slices from mid-L3"] = abs(loc.slice_index - mid)
                row["inside L3 body"] = truth[0] <= loc.slice_index <= truth[1]
            rows.append(row)
    if real is not None:
        from l3seg_lib.imageio.nifti import read_nifti

        loc = locate_l3(read_nifti(real / "example_ct.nii.gz"))
        rows.append({"case": "real example CT (TotalSegmentator L3 = slices 65-79)", "slices": 112, "slice_mm": 3.0,
                     "expected": "found", "status": loc.status, "confidence": loc.confidence, "true L3": (65, 79),
                     "chosen": loc.slice_index, "slices from mid-L3": None if loc.slice_index is None
                     else abs(loc.slice_index - 72), "inside L3 body": loc.slice_index is not None
                     and 65 <= loc.slice_index <= 79, "seconds": round(loc.seconds, 3), "reason": loc.reason})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, help="the totalsegmentator_example folder")
    ap.add_argument("--seeds", type=int, default=1, help="torsos per case (different anatomy)")
    args = ap.parse_args()
    df = run(args.real, args.seeds)
    pd.set_option("display.width", 250, "display.max_colwidth", 90)
    print(df[["case", "expected", "status", "confidence", "true L3", "chosen", "slices from mid-L3", "reason"]]
          .to_string(index=False))
    ok = df["status"] == df["expected"]
    found = df[df["status"] == "found"]
    print(f"\n{ok.sum()} of {len(df)} cases as expected; found cases: median {found['slices from mid-L3'].median()} "
          f"and max {found['slices from mid-L3'].max()} slices from mid-L3, "
          f"{found['inside L3 body'].mean():.0%} inside the L3 body")


if __name__ == "__main__":
    main()
