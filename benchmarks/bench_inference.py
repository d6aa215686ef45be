"""Inference latency per slice and peak memory on this machine (CPU unless CUDA is present).

    .venv/bin/python benchmarks/bench_inference.py [--model runs/<run>/train/model.pt] [--repeats 20]

Without --model, an untrained model of the default architecture is used (latency does not depend
on the weights); the 5-member ensemble of the default run is timed as well as a single model.
Prints the median of repeated runs for: the network alone at the model size, and the whole
Predictor (window, resize, network, resize back, argmax) on 256x256 and 512x512 slices.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from l3seg_lib.config import load_params
from l3seg_lib.training.network import build_model, count_parameters
from l3seg_lib.inference.predictor import Predictor
from l3seg_lib.training.checkpoint import save_checkpoint
from l3seg_lib.training.device import resolve_device

REPO = Path(__file__).resolve().parents[1]


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model file; default: untrained default architecture")
    ap.add_argument("--params", default=str(REPO / "params" / "default.yaml"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    device = resolve_device(params.device)
    print(f"device: {device}; torch threads: {torch.get_num_threads()}; torch {torch.__version__}")
    tmp = tempfile.TemporaryDirectory()
    models = {}
    if args.model:
        models["model file"] = Path(args.model)
    else:
        states = [build_model(params.model).state_dict() for _ in range(params.split.n_folds)]
        models["single model"] = save_checkpoint(Path(tmp.name) / "one.pt", states[:1], params, params.preprocess.image_size)
        models[f"{params.split.n_folds}-fold ensemble"] = save_checkpoint(Path(tmp.name) / "ens.pt", states, params,
                                                                           params.preprocess.image_size)
    net = build_model(params.model).to(device).eval()
    size = params.preprocess.image_size
    print(f"U-Net depth {params.model.depth}, width {params.model.base_width}: {count_parameters(net) / 1e6:.2f} M parameters, "
          f"model size {size} px")
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for s in (size, 2 * size):
            x = torch.rand(1, 1, s, s, device=device)
            t = median_time(lambda: net(x), args.repeats)
            print(f"network alone, one {s}x{s} input: {1000 * t:.1f} ms (median of {args.repeats})")
    for name, path in models.items():
        pred = Predictor(path, str(device))
        for n in (256, 512):
            hu = rng.normal(0, 300, (n, n)).astype(np.float32)
            t = median_time(lambda: pred.predict_hu(hu, (0.8, 0.8)), args.repeats)
            print(f"{name} ({len(pred.models)} network(s)), whole slice {n}x{n} -> labels: {1000 * t:.1f} ms per slice")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak:.0f} MB")
    if device.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
