"""Ribs on real CT (issue 30, item 1): which vertebrae the L3 localiser's rib tracer says bear ribs,
on each side, against the truth of every shared real scan.

    .venv/bin/python experiments/rib_check.py --data ../shared/data [--out runs/rib_check]

Truth: the rib labels of the TotalSegmentator-style label maps (rib_left_k / rib_right_k, values
92-103 / 104-115: rib k meets vertebra Tk) where they hold ribs, and for ACRIN the radiologist's
reading (``l3_reference/vertebrae.csv`` and NOTES.md: the lowest ribs meet T12; no lumbar ribs).
The vertebrae are named by the localiser's own count (checked against the same truth in
``experiments/l3_real_validation.py``); a rib label counts as present on a side when it holds at
least 200 mm3 in the field of view and is not cut by it at its medial end. Prints one row per
vertebra and side with the tracer's answer, the truth and whether they agree; writes
``rib_check.csv`` and ``rib_check.md`` into ``--out``. Exit status 2 when the data are missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from l3_real_validation import SERIES, load_series, read_reading, to_markdown

from l3seg_lib.imageio.labels import read_mask_for
from l3seg_lib.localize.l3 import locate_l3

RIB_LEFT, RIB_RIGHT = 92, 104
"""TotalSegmentator label value of rib_left_1 and rib_right_1 (rib k: + k - 1)."""


def label_truth(raw: np.ndarray, voxel_mm3: float) -> dict[tuple[str, int], bool]:
    """``{(vertebra, side): bears a rib}`` from rib labels (side -1 right, +1 left)."""
    out = {}
    for k in range(1, 13):
        for side, base in ((-1, RIB_RIGHT), (1, RIB_LEFT)):
            m = raw == base + k - 1
            out[(f"T{k}", side)] = bool(m.sum() * voxel_mm3 >= 200.0)
    return out


def reading_truth(reading: dict[str, tuple[int, int]]) -> dict[tuple[str, int], bool]:
    """The reading of ACRIN: T12 and the thoracic vertebrae above bear ribs, the lumbar ones none."""
    out = {}
    for name in reading:
        for side in (-1, 1):
            out[(name, side)] = name.startswith("T")
    return out


def check(data: Path) -> pd.DataFrame:
    rows = []
    for series, (folder, _, labels) in SERIES.items():
        volume, _ = load_series(data, series)
        if labels.endswith(".csv"):
            truth = reading_truth(read_reading(data / folder / labels))
        else:
            raw = read_mask_for(data / folder / labels, volume, "labels")
            truth = label_truth(raw, float(np.prod(volume.spacing_mm)))
        loc = locate_l3(volume)
        for vt in loc.vertebrae:
            if vt.ribs is None or vt.name.startswith("S"):
                continue
            # T1-T10 ribs meet the spine at the disc above their vertebra: which of the two a head is
            # given to is not scored (shown only); T11, T12 and the lumbar vertebrae are scored
            scored = vt.name.startswith("L") or vt.name in ("T11", "T12")
            for side, found in ((-1, vt.ribs_right), (1, vt.ribs_left)):
                expected = truth.get((vt.name, side), False if vt.name.startswith("L") else None)
                rows.append({"series": series, "vertebra": vt.name + (" (partly in view)" if vt.partial else ""),
                             "slices": f"{vt.z_lo}-{vt.z_hi}", "side": "right" if side < 0 else "left",
                             "tracer": "rib" if found else "none",
                             "truth": {True: "rib", False: "none", None: "?"}[expected] + ("" if scored else " (not scored)"),
                             "agree": None if expected is None or not scored or vt.partial else bool(found) == expected})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("runs/rib_check"))
    args = ap.parse_args(argv)
    missing = [f for f, _, _ in SERIES.values() if not (args.data / f).is_dir()]
    if missing:
        print(f"error: real data not found under {args.data}: {', '.join(missing)}", file=sys.stderr)
        return 2
    df = check(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "rib_check.csv", index=False)
    wide = df.pivot_table(index=["series", "vertebra", "slices"], columns="side", values=["tracer", "truth"],
                          aggfunc="first", sort=False)
    wide.columns = [f"{side} {what}" for what, side in wide.columns]
    wide = wide.reset_index()[["series", "vertebra", "slices", "right tracer", "right truth", "left tracer",
                                "left truth"]]
    md = to_markdown(wide)
    known = df[df["agree"].notna()]
    line = (f"{int(known['agree'].sum())}/{len(known)} vertebra sides agree with the truth; wrong: "
            + (", ".join(f"{r.series} {r.vertebra} {r.side} ({r.tracer}, truth {r.truth})"
                         for r in known[~known["agree"].astype(bool)].itertuples()) or "none"))
    (args.out / "rib_check.md").write_text(md + "\n\n" + line + "\n")
    print(md + "\n\n" + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
