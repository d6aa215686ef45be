"""Baseline against optimised: retrain the best setting exactly like the baseline and compare
both on the same held-out test patients."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from l3seg_lib.config import Params
from l3seg_lib.evaluation.evaluate import evaluate_cases, paired_comparison
from l3seg_lib.training.crossval import CVResult, cross_validate
from l3seg_lib.training.splits import subset


@dataclass
class Comparison:
    optimised_cv: CVResult
    baseline_eval: pd.DataFrame
    """Per test slice: Dice, areas and composition of the baseline model."""
    optimised_eval: pd.DataFrame
    table: pd.DataFrame
    """Per tissue: per-patient Dice of both, the difference and the Wilcoxon test."""


def retrain_and_compare(processed_dir: str | Path, manifest: pd.DataFrame, split: pd.DataFrame, params: Params,
                        best_params: Params, baseline_model: str | Path, out_dir: str | Path,
                        progress: bool = True) -> Comparison:
    """Cross-validate ``best_params`` with the baseline's folds and seeds (ensemble written to
    ``out_dir/optimised/model.onnx``), then evaluate both ensembles on the test patients.

    Writes ``test_baseline.csv``, ``test_optimised.csv`` and ``comparison.csv`` into ``out_dir``.
    """
    out = Path(out_dir)
    opt_cv = cross_validate(processed_dir, manifest, split, best_params, out_dir=out / "optimised",
                            label="optimised", progress=progress)
    test_rows = subset(manifest, split, "test")
    base_eval, _, _ = evaluate_cases(baseline_model, processed_dir, test_rows, params.composition,
                                     device=params.device, progress=progress)
    opt_eval, _, _ = evaluate_cases(opt_cv.model_path, processed_dir, test_rows, params.composition,
                                    device=params.device, progress=progress)
    base_eval.to_csv(out / "test_baseline.csv", index=False)
    opt_eval.to_csv(out / "test_optimised.csv", index=False)
    table = paired_comparison(base_eval, opt_eval)
    table.to_csv(out / "comparison.csv")
    return Comparison(opt_cv, base_eval, opt_eval, table)
