"""Baseline against optimised at equal compute, over several seeds, on the same held-out test
patients, with per-patient paired differences, 95 % confidence intervals and Holm's correction."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from tqdm import tqdm

from l3seg_lib.config import Params
from l3seg_lib.evaluation.evaluate import evaluate_cases, paired_comparison
from l3seg_lib.inference.model_file import params_sha256
from l3seg_lib.tissues import TISSUES
from l3seg_lib.training.checkpoint import checkpoint_spec, load_checkpoint
from l3seg_lib.training.crossval import CVResult, cross_validate
from l3seg_lib.training.splits import subset


@dataclass
class Comparison:
    """Baseline against optimised setting over several seeds: evaluations, per-tissue Dice test table and conclusion."""
    optimised_cv: CVResult
    """Cross-validation of the optimised setting with the first seed (its ensemble is the run's
    optimised model)."""
    baseline_eval: pd.DataFrame
    """Per test slice and seed: Dice, areas and composition of the baseline models."""
    optimised_eval: pd.DataFrame
    table: pd.DataFrame
    """Per tissue: per-patient Dice of both (mean over seeds), the paired difference with its 95 %
    confidence interval, the Wilcoxon test and its Holm-adjusted p."""
    seeds: list[int]
    steps_per_epoch: int
    conclusion: str
    reused: list[str] = field(default_factory=list)
    """Model files used as they were instead of being trained again (the cross-validation's baseline)."""


def equal_steps_per_epoch(manifest: pd.DataFrame, split: pd.DataFrame, params: Params) -> int:
    """Optimizer steps per epoch of the baseline's natural epoch (originals and augmented copies
    of a fold's training slices): the compute both settings get."""
    dev = subset(manifest, split, "dev")
    n = len(dev) * (params.split.n_folds - 1) / params.split.n_folds
    return max(1, int(math.ceil(n * (1.0 + params.train.data_ratio) / params.train.batch_size)))


def comparison_setting(setting: Params, seed: int, steps_per_epoch: int) -> Params:
    """``setting`` as the comparison trains it: with ``seed`` and ``steps_per_epoch`` optimizer steps per epoch."""
    p = copy.deepcopy(setting)
    p.seed, p.train.steps_per_epoch = seed, steps_per_epoch
    return p


def baseline_setting(manifest: pd.DataFrame, split: pd.DataFrame, params: Params) -> Params:
    """The baseline exactly as the comparison trains it with its first seed (``params.seed``, the
    equal-compute steps per epoch): what the cross-validation step trains, so that the comparison
    reuses that model instead of training it again (see ``reuse_baseline`` of
    :func:`retrain_and_compare`)."""
    return comparison_setting(params, params.seed, equal_steps_per_epoch(manifest, split, params))


def reusable_model(folder: str | Path | None, setting: Params) -> Path | None:
    """``folder/model.onnx`` when ``folder/model.pt`` was trained with exactly ``setting`` (same
    params hash: seed, steps, weights, epochs, everything), else None."""
    if folder is None or not (Path(folder) / "model.pt").is_file() or not (Path(folder) / "model.onnx").is_file():
        return None
    try:
        spec = checkpoint_spec(load_checkpoint(Path(folder) / "model.pt"))
    except Exception:  # noqa: BLE001 - an unreadable model is simply not reused
        return None
    return Path(folder) / "model.onnx" if spec.params_sha256 == params_sha256(setting) else None


def model_folder(out_dir: str | Path, name: str, seed: int, first_seed: int) -> Path:
    """Where :func:`retrain_and_compare` trains ``name`` (``baseline`` / ``optimised``) with
    ``seed``: ``out_dir/optimised`` for the first seed's optimised model (the run's model), else
    ``out_dir/seed<seed>/<name>``."""
    out = Path(out_dir)
    return out / name if (name == "optimised" and seed == first_seed) else out / f"seed{seed}" / name


def retrain_and_compare(processed_dir: str | Path, manifest: pd.DataFrame, split: pd.DataFrame, params: Params,
                        best_params: Params, out_dir: str | Path, progress: bool = True,
                        reuse_baseline: str | Path | None = None) -> Comparison:
    """Retrain the baseline and the optimised setting at equal compute (the same optimizer steps
    per epoch, :func:`equal_steps_per_epoch`) with ``optimize.compare_seeds`` seeds each, and
    compare them on the same held-out test patients (:func:`paired_statistics`).

    ``reuse_baseline``: a folder holding the baseline already trained exactly as its first seed
    here (:func:`baseline_setting`, e.g. the run's cross-validation ``train/``); its model is
    used instead of training it again (only when its params hash matches, :func:`reusable_model`).
    The first seed's optimised ensemble is written to ``out_dir/optimised/model.onnx``. Writes
    ``test_baseline.csv``, ``test_optimised.csv`` (with a ``seed`` column) and ``comparison.csv``.
    """
    out = Path(out_dir)
    steps = equal_steps_per_epoch(manifest, split, params)
    seeds = [params.seed + k for k in range(max(1, params.optimize.compare_seeds))]
    test_rows = subset(manifest, split, "test")
    evals: dict[str, list[pd.DataFrame]] = {"baseline": [], "optimised": []}
    first_opt = None
    jobs = [(k, seed, name, comparison_setting(setting, seed, steps)) for k, seed in enumerate(seeds)
            for name, setting in (("baseline", params), ("optimised", best_params))]
    reused = {(seed, name): reusable_model(reuse_baseline, p)  # the first baseline, when trained already
              for k, seed, name, p in jobs if k == 0 and name == "baseline"}
    n_train = sum(1 for k, seed, name, _ in jobs if reused.get((seed, name)) is None)
    bar = tqdm(total=n_train, desc="compare: models", unit="model", disable=not progress, mininterval=2.0)
    for k, seed, name, p in jobs:
        model_path = reused.get((seed, name))
        if model_path is None:
            cv = cross_validate(processed_dir, manifest, split, p, out_dir=model_folder(out, name, seed, seeds[0]),
                                label=f"{name} seed {seed}", progress=progress)
            model_path = cv.model_path
            bar.update(1)
            if k == 0 and name == "optimised":
                first_opt = cv
        df, _, _ = evaluate_cases(model_path, processed_dir, test_rows, params.composition,
                                  device=params.device, progress=False)
        evals[name].append(df.assign(seed=seed))
    bar.close()
    base_eval, opt_eval = pd.concat(evals["baseline"]), pd.concat(evals["optimised"])
    base_eval.to_csv(out / "test_baseline.csv", index=False)
    opt_eval.to_csv(out / "test_optimised.csv", index=False)
    table = paired_statistics(base_eval, opt_eval)
    table.to_csv(out / "comparison.csv")
    return Comparison(first_opt, base_eval, opt_eval, table, seeds, steps, comparison_conclusion(table, len(seeds)),
                      [str(path) for path in reused.values() if path is not None])


def paired_statistics(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per tissue, over patients: mean per-patient Dice of ``a`` and ``b`` (each averaged over its
    slices and seeds), the mean paired difference (b - a) with its 95 % confidence interval
    (t distribution), the median paired difference, the Wilcoxon signed-rank p, and Holm's
    adjustment of the three tissue p-values (muscle, SAT, VAT)."""
    table = paired_comparison(a, b)
    cols = [f"dice_{t}" for t in (*TISSUES, "mean_fg")]
    diff = b.groupby("patient_id")[cols].mean() - a.groupby("patient_id")[cols].mean()
    lows, highs = [], []
    for t in table.index:
        d = diff[f"dice_{t}"].dropna().to_numpy()
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) >= 2 else np.nan
        lows.append(d.mean() - half)
        highs.append(d.mean() + half)
    table["95% CI low"], table["95% CI high"] = lows, highs
    table["median difference"] = [float(diff[f"dice_{t}"].median()) for t in table.index]
    tissues = [t for t in TISSUES if t in table.index]
    table["holm p"] = np.nan
    table.loc[tissues, "holm p"] = holm(table.loc[tissues, "wilcoxon p"].to_numpy())
    return table


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of p-values (controls the family-wise error rate)."""
    p = np.asarray(p, dtype=float)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(np.argsort(p)):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def comparison_conclusion(table: pd.DataFrame, n_seeds: int) -> str:
    """The comparison in plain words, whatever it shows."""
    parts = []
    for t, name in (("muscle", "muscle"), ("sat", "SAT"), ("vat", "VAT")):
        r = table.loc[t]
        verdict = "no detectable difference"
        if r["holm p"] < 0.05:  # the signed-rank test: its direction is the median's
            verdict = "better" if r["median difference"] > 0 else "worse"
            if r["95% CI low"] <= 0 <= r["95% CI high"]:
                verdict += (f" in most patients (median {r['median difference']:+.3f}), but the mean's CI includes 0:"
                            f" a few patients carry most of the difference, so its size is uncertain")
        parts.append(f"{name} Dice {r['difference']:+.3f} (95 % CI {r['95% CI low']:+.3f} to {r['95% CI high']:+.3f}, "
                     f"Holm-adjusted p {r['holm p']:.2g}): {verdict}")
    n = int(table.loc["muscle", "patients"])
    return (f"At equal compute, over {n_seeds} seed(s) and {n} held-out test patients, the optimised setting "
            f"against the baseline: " + "; ".join(parts) + ".")
