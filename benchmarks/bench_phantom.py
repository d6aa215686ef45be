"""Speed of the synthetic data generator (default: 60 patients, 512x512, written as DICOM + NIfTI).

    .venv/bin/python benchmarks/bench_phantom.py [--patients 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from l3seg_lib.phantom import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        df = generate(tmp, n_patients=args.patients, seed=0, progress=False)
        dt = time.perf_counter() - t0
        import pathlib
        n_slices = len(list(pathlib.Path(tmp).rglob("*.dcm")))
    print(f"{len(df)} patients, {n_slices} slices (512x512 DICOM + NIfTI labels) in {dt:.1f} s "
          f"({1000 * dt / n_slices:.0f} ms per slice)")


if __name__ == "__main__":
    main()
