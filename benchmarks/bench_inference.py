"""Inference speed and memory, measured side by side in one run (CPU unless CUDA is present).

    .venv/bin/python benchmarks/bench_inference.py [--model runs/<run>/train/model.onnx] [--slices 200]

Prints, each figure a median of repeated runs:
1. whole-process ``l3seg predict`` on one 512x512 DICOM slice (a fresh Python process each time,
   imports included): wall time and peak memory (max RSS of the process);
2. ``l3seg measure`` throughput on a folder of ``--slices`` single-slice DICOM files, with every
   output (CSV, overlays, patient pages, index): slices/s, serial reading vs threaded reading;
3. network latency per slice at the model's input size: onnxruntime (the ONNX file inference
   uses) vs PyTorch eager (the same weights), and their ratio.

Without --model, an untrained model of the default architecture (5-fold ensemble, 256 px) is
exported and used: latency does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


GNU_TIME = Path("/usr/bin/time")


def run_process(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process.

    The peak memory comes from GNU time, which starts the child from its own small image: a child
    forked from this (large) Python process would count the parent's pages in its max RSS.
    """
    report = Path(tempfile.mktemp(suffix=".time"))
    cmd = [str(GNU_TIME), "-f", "%M", "-o", str(report), *args] if GNU_TIME.exists() else args
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"{args[:3]} failed: {proc.stderr.read().decode()[-2000:]}")
    kb = float(report.read_text().split()[-1]) if report.exists() else usage.ru_maxrss
    return wall, kb / 1024


def default_model(folder: Path, members: int = 5) -> Path:
    """An untrained model of the default architecture and input size, exported like a trained one."""
    from l3seg_lib.config import load_params
    from l3seg_lib.training.export import export_onnx
    from l3seg_lib.training.network import build_model

    p = load_params(REPO / "params" / "default.yaml")
    import torch

    torch.manual_seed(0)
    states = [build_model(p.model).state_dict() for _ in range(members)]
    return export_onnx(states, p, p.preprocess.image_size, folder / f"default_untrained_{members}.onnx",
                       "untrained (benchmark)")


def write_slices(folder: Path, n: int) -> list[Path]:
    """``n`` single-slice 512x512 DICOM files of the built-in phantom (one patient each; eight
    rendered patients repeated)."""
    from helpers import write_dicom

    from l3seg_lib import phantom

    bases = []
    for i in range(min(n, 8)):
        hu, _, info = phantom.render_slice(phantom.make_patient(i, seed=1, matrix=512, slices=(1, 1)), 0, 512)
        bases.append((hu, info["spacing_mm"]))
    return [write_dicom(folder / f"P{i:04d}.dcm", bases[i % len(bases)][0],
                        spacing=(bases[i % len(bases)][1],) * 2, patient_id=f"P{i:04d}") for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="l3seg ONNX model file (default: an untrained default-size ensemble)")
    ap.add_argument("--slices", type=int, default=200, help="slices for the measure throughput")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="l3seg-bench-"))
    model = Path(args.model) if args.model else default_model(tmp)
    l3seg = str(Path(sys.executable).with_name("l3seg"))
    from l3seg_lib.inference.model_file import OnnxModel

    info = OnnxModel(model, "cpu").info
    print(f"model: {model.name} ({info.members} member(s), {info.image_size} px input, "
          f"{model.stat().st_size / 1e6:.1f} MB); CPU cores: {len(os.sched_getaffinity(0))}")

    # 1. whole process, one slice
    data = tmp / "slices"
    files = write_slices(data, args.slices)
    single = default_model(tmp, members=1)
    print()
    for name, m in ((f"{info.members}-member model", model), ("1 network (default architecture)", single)):
        runs = [run_process([l3seg, "predict", str(files[0]), "--model", str(m), "--out", str(tmp / "pred")])
                for _ in range(args.repeats)]
        wall = statistics.median(r[0] for r in runs)
        peak = max(r[1] for r in runs)
        print(f"1. whole-process `l3seg predict` on one 512x512 DICOM slice, {name} (median of {args.repeats}): "
              f"{wall:.2f} s wall, peak memory {peak:.0f} MB")

    # 2. measure throughput
    from l3seg_lib.measurement.options import MeasureOptions
    from l3seg_lib.measurement.orchestration import measure_folder

    print()
    for label, m in ((f"{info.members}-member model", model), ("1 network", single)):
        results = {}
        for name, workers in (("serial reading", 0), ("threaded reading", 2)):
            t0 = time.perf_counter()
            res = measure_folder(data, m, tmp / f"measure_{workers}",
                                 MeasureOptions(progress=False, read_threads=workers, device="cpu"))
            seconds = time.perf_counter() - t0
            assert len(res.measurements) == args.slices, res.errors
            results[name] = args.slices / seconds
            print(f"2. `measure` on {args.slices} slices with all outputs, {label}, {name}: {seconds:.1f} s, "
                  f"{results[name]:.1f} slices/s")
        print(f"   threaded / serial: {results['threaded reading'] / results['serial reading']:.2f}x")
        wall_m, peak_m = run_process([l3seg, "measure", str(data), "--model", str(m), "--out", str(tmp / "m_cli")])
        print(f"   `l3seg measure` as a whole process, {label}: {wall_m:.1f} s ({args.slices / wall_m:.1f} slices/s), "
              f"peak memory {peak_m:.0f} MB")

    # 3. network latency: onnxruntime vs torch eager, same weights
    import torch

    from l3seg_lib.config import load_params
    from l3seg_lib.training.export import MeanSoftmax
    from l3seg_lib.training.network import build_model

    p = load_params(REPO / "params" / "default.yaml")
    torch.manual_seed(0)
    ensemble = MeanSoftmax([build_model(p.model).eval() for _ in range(info.members)]).eval()
    x = np.random.default_rng(0).random((1, info.image_size, info.image_size)).astype(np.float32)
    onnx_model = OnnxModel(model, "cpu")
    t_onnx = median_time(lambda: onnx_model(x), 20)
    with torch.no_grad():
        t_torch = median_time(lambda: ensemble(torch.from_numpy(x)[:, None]), 20)
    print(f"\n3. network per slice at {info.image_size}x{info.image_size}, {info.members}-member ensemble "
          f"(median of 20): onnxruntime {t_onnx * 1000:.0f} ms, torch eager {t_torch * 1000:.0f} ms, "
          f"ratio {t_torch / t_onnx:.2f}x")


if __name__ == "__main__":
    main()
