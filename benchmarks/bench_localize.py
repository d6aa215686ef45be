"""Speed and memory of the L3 localiser on a 500-slice series (2 CPU cores here).

    .venv/bin/python benchmarks/bench_localize.py [--slices 500] [--repeats 5] [--baseline GIT_REF]

A synthetic torso (1 mm slices, 512 x 512 pixels of 0.8 mm, sacrum to T9, curved couch, contrast aorta) is written as a DICOM
series; a fresh process then reads the series and finds L3 (GNU time gives its peak memory).
Prints the median time of the localiser alone on the loaded volume, the time to read the series,
and the process's peak memory beside the size of the volume itself. ``--baseline GIT_REF`` also
times the localiser of that commit (``l3seg_lib/localize`` as it was there, imported under another
name) on the same loaded volume, interleaved run by run, and prints both medians and their ratio.
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
base = None
if len(sys.argv) > 3:
    sys.path.insert(0, sys.argv[3])
    from l3seg_baseline.l3 import locate_l3 as base
    base(volume)  # its first call imports scipy.signal as the other's did
times, base_times = [], []
for _ in range(int(sys.argv[2])):
    s = time.perf_counter(); loc = locate_l3(volume); times.append(time.perf_counter() - s)
    if base is not None:
        s = time.perf_counter(); old = base(volume); base_times.append(time.perf_counter() - s)
print(f"{t1 - t0:.2f} {t2 - t1:.2f} {statistics.median(times):.3f} {volume.hu.nbytes / 2**20:.0f} {volume.n_slices} "
      f"{loc.status.replace(' ', '_')} {loc.slice_index} "
      + (f"{statistics.median(base_times):.3f} {old.status.replace(' ', '_')} {old.slice_index}" if base else ""))
"""


def baseline_package(ref: str, root: Path) -> Path:
    """``l3seg_lib/localize`` of git commit ``ref`` as the package ``l3seg_baseline`` under ``root``."""
    pkg = root / "l3seg_baseline"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{ref}:l3seg_lib/localize"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(["git", "show", f"{ref}:l3seg_lib/localize/{name}"], cwd=REPO, check=True,
                                  capture_output=True, text=True).stdout
            (pkg / name).write_text(text.replace("l3seg_lib.localize.", "l3seg_baseline."))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline", help="git commit whose localiser is timed beside today's (e.g. 52877a7)")
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
           str(args.repeats)] + ([str(baseline_package(args.baseline, tmp / "base"))] if args.baseline else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    imports, read, locate, volume_mb, n, status, chosen = out[:7]
    peak = float(report.read_text().split()[-1]) / 1024
    print(f"reading the series: {float(read):.1f} s (imports {float(imports):.1f} s)")
    print(f"localiser alone (median of {args.repeats}): {float(locate):.2f} s for {n} slices -> {status.replace('_', ' ')} "
          f"at slice {chosen}")
    if args.baseline:
        base, base_status, base_chosen = out[7:10]
        print(f"localiser of {args.baseline} on the same volume (median of {args.repeats}, interleaved): "
              f"{float(base):.2f} s -> {base_status.replace('_', ' ')} at slice {base_chosen}; "
              f"today / {args.baseline} = {float(locate) / float(base):.2f}")
    print(f"peak memory of the process: {peak:.0f} MB, of which the volume itself (float32) {volume_mb} MB"
          + (" (both localisers loaded)" if args.baseline else ""))


if __name__ == "__main__":
    main()
