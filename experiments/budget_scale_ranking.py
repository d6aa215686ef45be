"""Does the 128 px search budget rank settings as the model's 256 px scale does? (a study script,
run from the repository root after experiments/equal_compute_comparison.py):

    .venv/bin/python experiments/budget_scale_ranking.py --run runs/equal_compute

Takes the settings that search tried (``optimize/trials.jsonl``: baseline, random and guided
points, scored with the budget at 128 px, seed 42) and scores them again with the same budget
(same folds, epochs and optimizer steps) at 256 px, seed 42, and at 128 px with another seed
(43). The 128-vs-128 agreement across seeds is the ceiling set by training noise; the 128-vs-256
agreement is what the search's cheap scale costs. Results in ``<run>/scale_check/``; an
interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import pandas as pd

from l3seg_lib.config import load_params
from l3seg_lib.preprocessing.processed import read_processed_manifest
from l3seg_lib.training.optimize import cv_objective, read_trials
from l3seg_lib.training.scale_check import rank_agreement, rescore, scores_frame
from l3seg_lib.training.splits import make_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/equal_compute"))
    ap.add_argument("--full-size", type=int, default=256)
    ap.add_argument("--other-seed", type=int, default=43)
    args = ap.parse_args()
    p = load_params(args.run / "params.yaml")
    manifest = read_processed_manifest(args.run / "processed")
    split = make_splits(manifest, p.split, p.seed)  # the search's split, whatever seed trains
    trials = sorted(read_trials(args.run / "optimize" / "trials.jsonl"), key=lambda r: r["trial"])
    points = [r["params"] for r in trials]
    budget = scores_frame(trials)
    out = args.run / "scale_check"
    out.mkdir(exist_ok=True)
    objective = cv_objective(args.run / "processed", manifest, split, progress=False)

    p_seed = copy.deepcopy(p)
    p_seed.seed = args.other_seed
    other_seed = rescore(p_seed, objective, points, out / "budget_seed.jsonl", desc=f"128 px, seed {args.other_seed}")
    p_full = copy.deepcopy(p)
    p_full.optimize.budget.image_size = args.full_size
    full = rescore(p_full, objective, points, out / "full_scale.jsonl", desc=f"{args.full_size} px")

    size, top = p.optimize.budget.image_size, max(3, len(points) // 2)
    table = pd.concat({f"{size} px seed {p.seed} vs seed {args.other_seed}, all": rank_agreement(budget, other_seed),
                       f"{size} px vs {args.full_size} px, all": rank_agreement(budget, full),
                       f"{size} px seed {p.seed} vs seed {args.other_seed}, best {top}":
                       rank_agreement(budget, other_seed, top=top),
                       f"{size} px vs {args.full_size} px, best {top}": rank_agreement(budget, full, top=top)})
    scores = budget.merge(other_seed, on="setting", suffixes=("", f"_seed{args.other_seed}")).merge(
        full, on="setting", suffixes=("", f"_{args.full_size}px"))
    scores.insert(1, "kind", [r["kind"] for r in trials])
    scores.to_csv(out / "scores.csv", index=False)
    table.to_csv(out / "rank_agreement.csv")
    print(scores.round(3).to_string(index=False))
    print(table.round(3).to_string())
    (out / "summary.json").write_text(json.dumps(
        {"settings": len(points), "seconds_median": {"budget": float(budget["seconds"].median()),
                                                    "other_seed": float(other_seed["seconds"].median()),
                                                    "full": float(full["seconds"].median())},
         "agreement": json.loads(table.to_json(orient="index"))}, indent=2))


if __name__ == "__main__":
    main()
