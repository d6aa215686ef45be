"""Speed and peak memory of ``l3seg measure`` as a whole process (2 CPU cores here).

    .venv/bin/python benchmarks/bench_measure.py [--slices 200] [--singles 100] [--repeats 3]
                                                 [--modes plain,dicom] [--compare-ref HEAD]

Two inputs are written once: a synthetic torso series (``--slices`` axial DICOM slices of 512 x 512
pixels of 0.8 mm, 2 mm apart, sacrum upwards, curved couch, contrast aorta; measured where the
localiser finds L3) and a folder of ``--singles`` single-slice DICOM files (the body phantom of
the tests, each its own series; measured as given). ``l3seg measure`` runs on each in a fresh
process under GNU time; the median wall time and the peak resident memory (of ``--repeats``
runs) are printed, for each of ``--modes``: ``plain`` (``l3seg measure``) and ``dicom``
(``l3seg measure --dicom``: DICOM SEG/SR too).

``--compare-ref REF`` checks REF out into a temporary ``git worktree`` and runs the same commands
with that tree's code beside the working tree's (the same model file, the same inputs,
interleaved runs), printing both and the ratio, and checks that the two ``measurements.csv``
are identical except the timing columns.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

TIMING_COLUMNS = {"inference_s"}
"""Columns of measurements.csv that hold timings (differ from run to run)."""

CHILD = ("import sys; tree = sys.argv.pop(1); sys.path.insert(0, tree); import l3seg_lib; "
         "assert l3seg_lib.__file__.startswith(tree), l3seg_lib.__file__; "
         "from l3seg_lib.cli import main; sys.exit(main(sys.argv[1:]))")


def write_inputs(root: Path, slices: int, singles: int) -> tuple[Path, Path]:
    import numpy as np
    from helpers import body_phantom, write_dicom

    from l3seg_lib.phantom.torso import TorsoSpec, make_torso

    series = root / "series" / "CT1"
    torso = make_torso(TorsoSpec(slice_mm=2.0, matrix=512, pixel_mm=0.8, z_from=-150.0, z_to=-150.0 + 2.0 * (slices - 1),
                                 table="curved", table_gap_mm=10.0, contrast_hu=300.0))
    for k in range(torso.hu.shape[0]):
        write_dicom(series / f"IM{k:04d}.dcm", torso.hu[k], spacing=(0.8, 0.8),
                    position=(-205.0, -185.0, 2.0 * k), series_uid="1.2.826.0.1.3680043.10.2.2",
                    patient_id="BENCH", InstanceNumber=k + 1, SliceThickness="2")
    hu, _ = body_phantom(256, 256)
    rng = np.random.default_rng(0)
    for k in range(singles):
        noisy = (hu + rng.normal(0, 8, hu.shape)).astype(np.float32)
        write_dicom(root / "singles" / f"S{k:03d}.dcm", noisy, spacing=(1.2, 1.2), patient_id=f"P{k:03d}")
    return root / "series", root / "singles"


def run_measure(tree: Path, folder: Path, out: Path, model: Path, dicom: bool) -> tuple[float, float]:
    """One ``l3seg measure`` in a fresh process with ``tree``'s code: (wall seconds, peak MB)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    report = out.parent / f"{out.name}.time"
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(report), sys.executable, "-c", CHILD, str(tree), "measure",
           str(folder), "--out", str(out), "--model", str(model), "--force"] + (["--dicom"] if dicom else [])
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tree)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"measure failed ({tree}):\n{done.stdout}\n{done.stderr}")
    return seconds, float(report.read_text().split()[-1]) / 1024


def same_csv(a: Path, b: Path) -> str:
    """'' when the two measurements.csv are identical except timing columns; else what differs."""
    import pandas as pd

    x = pd.read_csv(a, dtype=str, keep_default_na=False)
    y = pd.read_csv(b, dtype=str, keep_default_na=False)
    if list(x.columns) != list(y.columns):
        return f"columns differ: {sorted(set(x.columns) ^ set(y.columns))} / order"
    keep = [c for c in x.columns if c not in TIMING_COLUMNS]
    x, y = x[keep], y[keep]
    if x.shape != y.shape:
        return f"shapes differ {x.shape} vs {y.shape}"
    diff = [c for c in keep if not (x[c] == y[c]).all()]
    return f"values differ in {diff}" if diff else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--singles", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="plain,dicom", help="plain and/or dicom (with --dicom), comma-separated")
    ap.add_argument("--compare-ref", help="git ref to run beside the working tree (e.g. HEAD)")
    ap.add_argument("--model", default=str(REPO / "l3seg_lib" / "models" / "default.onnx"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="l3seg-bench-measure-"))
    t0 = time.perf_counter()
    series, singles = write_inputs(tmp / "in", args.slices, args.singles)
    print(f"inputs: a {args.slices}-slice 512x512 series and {args.singles} single 256x256 slices "
          f"(written in {time.perf_counter() - t0:.0f} s) under {tmp}")
    trees = {"working tree": REPO}
    if args.compare_ref:
        ref_tree = tmp / "ref"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(ref_tree), args.compare_ref],
                       check=True, capture_output=True)
        trees = {f"ref {args.compare_ref}": ref_tree, "working tree": REPO}
    try:
        for mode in args.modes.split(","):
            bench_mode(mode, args, trees, tmp, series, singles)
    finally:
        if args.compare_ref:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "ref")],
                           capture_output=True)


def bench_mode(mode: str, args: argparse.Namespace, trees: dict[str, Path], tmp: Path, series: Path,
               singles: Path) -> None:
    """Run and print one mode (plain or dicom) for every tree."""
    dicom = mode == "dicom"
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for case, folder in (("series", series), ("singles", singles)):
        for r in range(args.repeats):
            for name, tree in trees.items():  # interleaved, so load from other jobs hits both alike
                out = tmp / "out" / f"{mode}-{case}-{name.replace(' ', '_')}-{r}"
                results.setdefault((case, name), []).append(run_measure(tree, folder, out, Path(args.model),
                                                                        dicom))
    print(f"\nl3seg measure{' --dicom' if dicom else ''}, whole process, median of {args.repeats}:", flush=True)
    for case in ("series", "singles"):
        label = f"{args.slices}-slice series" if case == "series" else f"{args.singles} single slices"
        medians = {}
        for name in trees:
            runs = results[(case, name)]
            medians[name] = (statistics.median(s for s, _ in runs), max(m for _, m in runs))
            print(f"  {label:>20} | {name:>14}: {medians[name][0]:6.1f} s, peak {medians[name][1]:6.0f} MB  "
                  f"(runs: {', '.join(f'{s:.1f}' for s, _ in runs)} s)")
        if args.compare_ref:
            ref, new = medians[f"ref {args.compare_ref}"], medians["working tree"]
            problem = same_csv(tmp / "out" / f"{mode}-{case}-ref_{args.compare_ref}-0" / "measurements.csv",
                               tmp / "out" / f"{mode}-{case}-working_tree-0" / "measurements.csv")
            print(f"  {label:>20} | speed-up {ref[0] / new[0]:.2f}x, peak memory {new[1] / ref[1]:.2f}x of ref; "
                  f"measurements.csv {'identical except timings' if not problem else 'DIFFERS: ' + problem}",
                  flush=True)


if __name__ == "__main__":
    main()
