"""Serial against Dask workers, side by side in one run: `measure` over a folder of slices and a
Bayesian search of a few trials (equal compute per trial). Prints medians and ratios; asserts
only that both give the same numbers.

    .venv/bin/python benchmarks/bench_dask.py [--slices 60] [--trials 4] [--workers 2] [--repeats 3]

measure: the shipped default model (l3seg_lib/models/default.onnx) on 512x512 phantom DICOM
slices; serial = this process (onnxruntime on all cores), workers = a LocalCluster of single-
threaded worker processes (cluster start-up included). Search: ``--trials`` trials of the default
budget at 128 px with fewer steps, on a tiny built-in data set, serial against ``--workers``
workers (constant liar, batches of ``--workers``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))


def bench_measure(tmp: Path, n: int, workers: int, repeats: int) -> None:
    from bench_inference import write_slices

    from l3seg_lib.measurement.options import MeasureOptions
    from l3seg_lib.measurement.orchestration import measure_folder

    data = tmp / "slices"
    write_slices(data, n)
    model = REPO / "l3seg_lib" / "models" / "default.onnx"
    times: dict[str, list[float]] = {"serial": [], f"{workers} workers": []}
    tables = {}
    for r in range(repeats):
        for name, w in (("serial", 0), (f"{workers} workers", workers)):
            t0 = time.perf_counter()
            res = measure_folder(data, model, tmp / f"m_{w}_{r}", MeasureOptions(progress=False, workers=w, device="cpu"))
            times[name].append(time.perf_counter() - t0)
            tables[name] = res.measurements.sort_values("patient_id").reset_index(drop=True)
    cols = ["patient_id", "sma_cm2", "sat_cm2", "vat_cm2", "muscle_refined_hu_mean"]
    pd.testing.assert_frame_equal(tables["serial"][cols], tables[f"{workers} workers"][cols], check_dtype=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"measure, {n} slices, {k}: median {v:.1f} s ({n / v:.1f} slices/s) over {repeats} runs")
    print(f"   {workers} workers / serial speed: {med['serial'] / med[f'{workers} workers']:.2f}x (numbers identical)")


def bench_search(tmp: Path, trials: int, workers: int) -> None:
    from l3seg_lib.config import Params
    from l3seg_lib.preprocessing.processed import prepare_builtin
    from l3seg_lib.training.optimize import cv_objective, run_search
    from l3seg_lib.training.splits import make_splits

    p = Params(name="bench_dask")
    p.data.phantom.n_patients, p.data.phantom.slices_per_patient = 20, [1, 1]
    p.optimize.n_trials, p.optimize.init_points = trials, 1
    p.optimize.budget.epochs, p.optimize.budget.steps_per_epoch = 2, 10
    manifest = prepare_builtin(tmp / "raw", tmp / "processed", p)
    split = make_splits(manifest, p.split, p.seed)
    objective = cv_objective(tmp / "processed", manifest, split, progress=False)
    seconds, results = {}, {}
    for name, w in (("serial", 0), (f"{workers} workers", workers)):
        q = copy.deepcopy(p)
        q.optimize.workers = w
        t0 = time.perf_counter()
        results[name] = run_search(q, objective, tmp / f"search_{w}", progress=True).trials
        seconds[name] = time.perf_counter() - t0
        steps = sorted(set(results[name]["optimizer_steps"]))
        print(f"search, {trials} trials ({steps} optimizer steps each), {name}: {seconds[name]:.0f} s "
              f"({seconds[name] / trials:.0f} s per trial)")
    print(f"   {workers} workers / serial speed: {seconds['serial'] / seconds[f'{workers} workers']:.2f}x; "
          f"first {1 + p.optimize.init_points} trials (baseline, random) identical: "
          f"{results['serial']['target'][:2].tolist() == results[f'{workers} workers']['target'][:2].tolist()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=60)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="The value length", category=UserWarning)  # the test writer's DS
    tmp = Path(tempfile.mkdtemp(prefix="l3seg-bench-dask-"))
    print(f"CPU cores: {len(os.sched_getaffinity(0))}")
    bench_measure(tmp, args.slices, args.workers, args.repeats)
    bench_search(tmp, args.trials, args.workers)


if __name__ == "__main__":
    main()
