"""Speed and memory of the L3 localiser on a 500-slice series (2 CPU cores here).

    .venv/bin/python benchmarks/bench_localize.py [--slices 500] [--repeats 5]

A synthetic torso (1 mm slices, 512 x 512 pixels of 0.8 mm, sacrum to T9, curved couch, contrast aorta) is written as a DICOM
series; a fresh process then reads the series and finds L3 (GNU time gives its peak memory).
Prints the median time of the localiser alone on the loaded volume, the time to read the series,
and the process's peak memory beside the size of the volume itself.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

CHILD = """
import statistics, sys, time
t0 = time.perf_counter()
from l3seg_lib.imageio.reader import read_image
from l3seg_lib.localize.l3 import locate_l3
t1 = time.perf_counter()
volume = read_image(sys.argv[1])
t2 = time.perf_counter()
times = []
for _ in range(int(sys.argv[2])):
    s = time.perf_counter(); loc = locate_l3(volume); times.append(time.perf_counter() - s)
print(f"{t1 - t0:.2f} {t2 - t1:.2f} {statistics.median(times):.3f} {volume.hu.nbytes / 2**20:.0f} {volume.n_slices} "
      f"{loc.status.replace(' ', '_')} {loc.slice_index}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from helpers import write_dicom

    from l3seg_lib.phantom.torso import TorsoSpec, make_torso

    tmp = Path(tempfile.mkdtemp(prefix="l3seg-bench-loc-"))
    t0 = time.perf_counter()
    torso = make_torso(TorsoSpec(slice_mm=1.0, matrix=512, pixel_mm=0.8, z_from=-190.0, z_to=-190.0 + args.slices - 1,
                                 table="curved", table_gap_mm=10.0, contrast_hu=300.0))
    for k in range(torso.hu.shape[0]):
        write_dicom(tmp / "series" / f"IM{k:04d}.dcm", torso.hu[k], spacing=(0.8, 0.8), position=(-205.0, -185.0, float(k)),
                    series_uid="1.2.826.0.1.3680043.10.2.1", InstanceNumber=k + 1, SliceThickness="1")
    truth = torso.slices_of("L3")
    print(f"synthetic series: {torso.hu.shape[0]} slices of 512x512 (1 mm, 0.8 mm pixels) written in "
          f"{time.perf_counter() - t0:.0f} s; true L3 body: slices {truth[0]}-{truth[1]}")
    del torso
    report = tmp / "time.txt"
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(report), sys.executable, "-c", CHILD, str(tmp / "series"),
           str(args.repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    imports, read, locate, volume_mb, n, status, chosen = out
    peak = float(report.read_text().split()[-1]) / 1024
    print(f"reading the series: {float(read):.1f} s (imports {float(imports):.1f} s)")
    print(f"localiser alone (median of {args.repeats}): {float(locate):.2f} s for {n} slices -> {status.replace('_', ' ')} "
          f"at slice {chosen}")
    print(f"peak memory of the process: {peak:.0f} MB, of which the volume itself (float32) {volume_mb} MB")


if __name__ == "__main__":
    main()
