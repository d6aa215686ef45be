"""Training throughput, peak memory, and the cross-validated Dice of a finished run.

    .venv/bin/python benchmarks/bench_training.py [--run runs/<timestamp>-default] [--steps 10]

Throughput: slices per second through forward + backward + Adam step of the default U-Net at
the default model size (random data, so data loading is excluded). Dice: read from the run's
``train/cv_slices.csv`` (out-of-fold validation, dev patients only) and, when present,
``evaluate/per_slice.csv`` (held-out test patients). Without --run, the newest default run.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import pandas as pd
import torch

from l3seg_lib.config import load_params
from l3seg_lib.pipeline.runs import latest_run
from l3seg_lib.training.device import resolve_device
from l3seg_lib.training.losses import SegmentationLoss
from l3seg_lib.training.network import build_model

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="run folder with train/cv_slices.csv")
    ap.add_argument("--params", default=str(REPO / "params" / "default.yaml"))
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    params = load_params(args.params)
    device = resolve_device(params.device)
    size, bs = params.preprocess.image_size, params.train.batch_size
    model = build_model(params.model).to(device).train()
    loss_fn = SegmentationLoss(params.train.class_weights).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=params.train.lr)
    x = torch.rand(bs, 1, size, size, device=device)
    y = torch.randint(0, 4, (bs, size, size), device=device)

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"device {device}, {torch.get_num_threads()} threads: training throughput {args.steps * bs / dt:.1f} slices/s "
          f"({size}x{size}, batch {bs}, width {params.model.base_width}, depth {params.model.depth})")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

    run = Path(args.run) if args.run else latest_run(REPO / "runs", "default")
    if run is None or not (run / "train" / "cv_slices.csv").is_file():
        print("no finished default run found: run `make run` first, or pass --run")
        return
    print(f"run: {run}")
    summary = run / "train" / "summary.json"
    if summary.is_file():
        print(f"cross-validation wall time: {json.loads(summary.read_text())['minutes']:.1f} min")
    cv = pd.read_csv(run / "train" / "cv_slices.csv")
    cols = ["dice_muscle", "dice_sat", "dice_vat", "dice_mean_fg"]
    print("cross-validated Dice (out-of-fold, dev patients):")
    print(cv[cols].agg(["mean", "std"]).T.round(4).to_string())
    test = run / "evaluate" / "per_slice.csv"
    if test.is_file():
        print("held-out test patients (final model):")
        print(pd.read_csv(test)[cols].agg(["mean", "std"]).T.round(4).to_string())


if __name__ == "__main__":
    main()
