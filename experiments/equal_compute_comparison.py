"""The reference study's experiment at equal compute, on the built-in data, outside the notebooks
(a study script, run from the repository root):

    .venv/bin/python experiments/equal_compute_comparison.py --out runs/equal_compute [--folds 2]

The default params: generate and preprocess the built-in data, run the Bayesian search (trials
at equal compute, scored on their last epoch), then retrain baseline and optimised at equal
compute with ``optimize.compare_seeds`` seeds each and compare them on the held-out test
patients (per-patient paired differences, 95 % CIs, Holm). ``--folds`` trains only that many
cross-validation folds per retraining (the full 5 take about 2 hours on 2 cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from l3seg_lib.config import Params, save_params
from l3seg_lib.training.compare import retrain_and_compare
from l3seg_lib.training.optimize import cv_objective, run_search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/equal_compute"))
    ap.add_argument("--folds", type=int, default=5, help="folds trained per retraining (5 = all)")
    ap.add_argument("--budget-size", type=int, default=None,
                    help="image size (px) of the search's trials (default: optimize.budget.image_size, 128)")
    ap.add_argument("--processed", type=Path, default=None,
                    help="the processed built-in data of an earlier run of this script (not generated again)")
    args = ap.parse_args()
    from l3seg_lib.preprocessing.processed import prepare_builtin
    from l3seg_lib.training.splits import make_splits

    p = Params(name="equal_compute")
    p.train.folds_to_run = list(range(args.folds))
    if args.budget_size:
        p.optimize.budget.image_size = args.budget_size
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    save_params(p, out / "params.yaml")
    processed = args.processed or out / "processed"
    manifest = prepare_builtin(out / "raw", processed, p)
    split = make_splits(manifest, p.split, p.seed)
    search = run_search(p, cv_objective(processed, manifest, split), out / "optimize")
    print(search.trials[["trial", "kind", *p.optimize.bounds, "target", "optimizer_steps", "seconds"]].round(3)
          .to_string(index=False), flush=True)
    comp = retrain_and_compare(processed, manifest, split, p, search.best_params, out / "compare")
    print(comp.table.round(4).to_string())
    print(comp.conclusion)
    (out / "summary.json").write_text(json.dumps({"best": search.best_point, "best_target": search.best_target,
                                                  "seeds": comp.seeds, "steps_per_epoch": comp.steps_per_epoch,
                                                  "folds": args.folds, "budget_image_size": p.optimize.budget.image_size, "conclusion": comp.conclusion,
                                                  "table": comp.table.round(4).to_dict(orient="index")}, indent=2))


if __name__ == "__main__":
    main()
