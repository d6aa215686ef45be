"""Baseline vs optimised of the equal-compute experiment, on real CT (a study script, run from the
repository root after experiments/equal_compute_comparison.py):

    .venv/bin/python experiments/equal_compute_realct.py --run runs/equal_compute \\
        --real ../shared/data/totalsegmentator_example

Every retrained model of the comparison (baseline and optimised, one per seed) segments the real
example's 30 labelled slices (T11-L2, 3 mm, TotalSegmentator tissue masks as reference; zero-shot,
nothing trains or tunes on them), with the post-processing the evaluation uses. One patient: the
slices are neighbours, not independent cases, so the table gives the difference per seed and no
p-value. Results in ``<run>/realct/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from realct_check import (  # experiments/, beside this script
    evaluate_slices,
    load_tissue_crop,
)

from l3seg_lib.training.compare import model_folder
from l3seg_lib.tissues import TISSUES
from l3seg_lib.inference.predictor import Predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/equal_compute"))
    ap.add_argument("--real", type=Path, required=True, help="the totalsegmentator_example folder")
    args = ap.parse_args()
    seeds = json.loads((args.run / "summary.json").read_text())["seeds"]
    volume, labels = load_tissue_crop(args.real)
    indices = list(range(volume.n_slices))
    rows = []
    for seed in seeds:
        for name in ("baseline", "optimised"):
            path = model_folder(args.run / "compare", name, seed, seeds[0]) / "model.onnx"
            df, _ = evaluate_slices(Predictor(path, "cpu", postprocess=True), volume, labels, indices)
            rows.append(df.assign(model=name, seed=seed))
    slices = pd.concat(rows, ignore_index=True)
    out = args.run / "realct"
    out.mkdir(exist_ok=True)
    slices.to_csv(out / "slices.csv", index=False)

    table = {}
    for t in TISSUES:
        dice = slices.pivot_table(index="seed", columns="model", values=f"dice_{t}", aggfunc="mean")
        per_slice = slices.pivot_table(index="slice_index", columns="model", values=f"dice_{t}", aggfunc="mean")
        area = slices.groupby(["model", "seed"])[[f"area_pred_{t}_cm2", f"area_true_{t}_cm2"]].sum()
        area_err = 100 * (area.iloc[:, 0] - area.iloc[:, 1]) / area.iloc[:, 1]
        diff = dice["optimised"] - dice["baseline"]
        table[t] = {"baseline Dice": dice["baseline"].mean(), "optimised Dice": dice["optimised"].mean(),
                    "difference per seed": " / ".join(f"{d:+.3f}" for d in diff),
                    "slices better / worse": f"{int((per_slice['optimised'] > per_slice['baseline']).sum())} / "
                                             f"{int((per_slice['optimised'] < per_slice['baseline']).sum())}",
                    "baseline area error (%)": area_err["baseline"].mean(),
                    "optimised area error (%)": area_err["optimised"].mean()}
    table = pd.DataFrame.from_dict(table, orient="index")
    table.to_csv(out / "comparison.csv")
    print(f"{len(seeds)} seeds, {len(indices)} labelled real slices of one patient (zero-shot)")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
