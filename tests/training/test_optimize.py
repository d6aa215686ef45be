"""Bayesian optimisation: objective wiring, resume logic, params round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_params

from l3seg_lib.config import Params, load_params
from l3seg_lib.errors import ResumeError
from l3seg_lib.evaluation.evaluate import paired_comparison
from l3seg_lib.preprocessing.processed import read_processed_manifest
from l3seg_lib.training import crossval as crossval_module
from l3seg_lib.training.optimize import (
    apply_point,
    cv_objective,
    read_trials,
    run_search,
)
from l3seg_lib.training.splits import make_splits


def _search_params(n_trials=6, init_points=2) -> Params:
    p = Params()
    p.optimize.n_trials, p.optimize.init_points = n_trials, init_points
    p.optimize.bounds = {"w_muscle": (0.5, 5.0), "w_sat": (0.5, 5.0), "data_ratio": (0.0, 3.0), "log10_lr": (-3.5, -2.0)}
    return p


def cheap_objective(params, point):
    """A smooth function with its maximum at w_sat = 3, data_ratio = 1."""
    p = apply_point(params, point)
    value = 1.0 - 0.05 * (p.train.class_weights[2] - 3.0) ** 2 - 0.02 * (p.train.data_ratio - 1.0) ** 2
    return {"target": value, "dice_muscle": value, "dice_sat": value, "dice_vat": value}


def test_apply_point_maps_search_space():
    p = apply_point(Params(), {"w_muscle": 2.0, "w_sat": 3.0, "w_vat": 1.5, "data_ratio": 2.5, "log10_lr": -3.0})
    assert p.train.class_weights == (1.0, 2.0, 3.0, 1.5)  # background fixed at 1
    assert p.train.data_ratio == 2.5 and p.train.lr == pytest.approx(1e-3)
    assert Params().train.class_weights == (1.0, 1.0, 1.0, 1.0)  # input untouched


def test_search_improves_and_writes_best_params(tmp_path):
    res = run_search(_search_params(10, 3), cheap_objective, tmp_path, progress=False)
    assert len(res.trials) == 10
    assert res.best_target == res.trials["target"].max()
    assert list(res.trials["kind"][:4]) == ["baseline"] + ["random"] * 3 and res.trials["kind"].iloc[-1] == "bayes"
    base = res.trials.iloc[0]  # trial 0 is the params' own setting under the same budget
    assert (base["w_muscle"], base["w_sat"], base["data_ratio"]) == (1.0, 1.0, Params().train.data_ratio)
    assert base["log10_lr"] == pytest.approx(np.log10(Params().train.lr))
    assert res.trials["best_so_far"].is_monotonic_increasing
    best = load_params(res.best_params_path)  # usable directly as a params file for training
    assert best.train.class_weights[2] == pytest.approx(res.best_point["w_sat"])
    assert best.train.lr == pytest.approx(10 ** res.best_point["log10_lr"])
    assert best.train.epochs == Params().train.epochs  # full training, not the budget


@pytest.mark.heavy
def test_resume_gives_the_same_trials_without_repeating(tmp_path):
    full = run_search(_search_params(), cheap_objective, tmp_path / "a", progress=False)
    calls = []

    def counting(params, point):
        calls.append(point)
        return cheap_objective(params, point)

    part = run_search(_search_params(), counting, tmp_path / "b", progress=False, max_new_trials=3)
    assert len(part.trials) == 3 and len(calls) == 3
    # an interrupted write leaves a torn last line: it is ignored and that trial rerun
    with open(tmp_path / "b" / "trials.jsonl", "a") as f:
        f.write('{"trial": 3, "par')
    resumed = run_search(_search_params(), counting, tmp_path / "b", progress=False)
    assert len(calls) == 6  # 3 new trials, none repeated
    pd.testing.assert_frame_equal(full.trials.drop(columns="seconds"), resumed.trials.drop(columns="seconds"))


def test_resume_refuses_a_log_of_another_search(tmp_path):
    run_search(_search_params(), cheap_objective, tmp_path, progress=False, max_new_trials=2)
    other = _search_params()
    other.optimize.bounds["w_sat"] = (1.0, 2.0)
    with pytest.raises(ResumeError, match="other optimisation settings"):
        run_search(other, cheap_objective, tmp_path, progress=False)
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["params"]["w_sat"] += 0.5
    (tmp_path / "trials.jsonl").write_text(lines[0] + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(ResumeError, match="does not match the replayed suggestion"):
        run_search(_search_params(), cheap_objective, tmp_path, progress=False)
    assert len(read_trials(tmp_path / "trials.jsonl")) == 2


def test_cv_objective_uses_dev_folds_only(tiny_processed, monkeypatch):
    proc = tiny_processed / "proc"
    man = read_processed_manifest(proc)
    p = tiny_params()
    p.optimize.budget.epochs, p.optimize.budget.image_size, p.optimize.budget.folds = 1, 16, [0]
    split = make_splits(man, p.split, p.seed)
    seen = []
    real = crossval_module.load_slices

    def spy(processed_dir, rows, image_size=None):
        seen.extend(rows["patient_id"])
        x, y = real(processed_dir, rows, image_size)
        assert x.shape[-1] == 16
        return x, y

    monkeypatch.setattr(crossval_module, "load_slices", spy)
    out = cv_objective(proc, man, split)(p, {"w_sat": 2.0, "data_ratio": 0.5, "log10_lr": -2.5})
    assert 0.0 <= out["target"] <= 1.0 and {"dice_muscle", "dice_sat", "dice_vat"} <= set(out)
    test_ids = set(split.loc[split["set"] == "test", "patient_id"])
    assert seen and not set(seen) & test_ids


def test_paired_comparison():
    rng = np.random.default_rng(0)
    base = pd.DataFrame({"patient_id": [f"p{i}" for i in range(8)],
                         **{f"dice_{t}": rng.uniform(0.8, 0.9, 8) for t in ("muscle", "sat", "vat")}})
    base["dice_mean_fg"] = base[["dice_muscle", "dice_sat", "dice_vat"]].mean(axis=1)
    better = base.copy()
    better[["dice_muscle", "dice_mean_fg"]] += 0.05
    table = paired_comparison(base, better)
    assert table.loc["muscle", "difference"] == pytest.approx(0.05)
    assert table.loc["muscle", "wilcoxon p"] < 0.01
    assert table.loc["sat", "wilcoxon p"] == 1.0 and table.loc["sat", "better / worse / equal"] == "0 / 0 / 8"
    with pytest.raises(ValueError, match="different patients"):
        paired_comparison(base, better.iloc[:5])


def test_baseline_outside_bounds_is_not_a_trial(tmp_path):
    p = _search_params(4, 1)
    p.optimize.bounds["w_sat"] = (2.0, 5.0)  # baseline weight 1 lies outside
    res = run_search(p, cheap_objective, tmp_path, progress=False)
    assert "baseline" not in set(res.trials["kind"]) and res.trials["kind"].iloc[0] == "random"


def test_trials_have_equal_compute_whatever_the_data_ratio(tiny_processed, tmp_path):
    """Every trial takes budget.epochs x budget.steps_per_epoch optimizer steps per fold, so a
    higher data ratio changes the share of augmented samples, not the training time."""
    proc = tiny_processed / "proc"
    man = read_processed_manifest(proc)
    p = tiny_params()
    p.optimize.budget.epochs, p.optimize.budget.image_size, p.optimize.budget.folds = 2, 16, [0]
    p.optimize.budget.steps_per_epoch = 3
    p.optimize.n_trials, p.optimize.init_points = 3, 2
    p.optimize.bounds["data_ratio"] = (0.0, 3.0)
    split = make_splits(man, p.split, p.seed)
    res = run_search(p, cv_objective(proc, man, split, progress=False), tmp_path, progress=False)
    log = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert len({round(r["params"]["data_ratio"], 3) for r in log}) == 3
    assert {r["optimizer_steps"] for r in log} == {2 * 3}  # equal across trials
    assert all(r["seconds"] > 0 for r in log) and len(res.trials) == 3


def test_last_epoch_selection_takes_no_validation_choice(tiny_processed):
    from l3seg_lib.training.dataset import load_slices
    from l3seg_lib.training.trainer import train_model

    proc = tiny_processed / "proc"
    man = read_processed_manifest(proc)
    x, y = load_slices(proc, man)
    p = tiny_params(epochs=3, select_epoch="last", early_stopping_patience=1)
    import torch

    res = train_model(x[:4], y[:4], x[4:], y[4:], p.model, p.train, 0, torch.device("cpu"), progress=False)
    assert res.best_epoch == 3 and len(res.history) == 3  # the last epoch, and no early stop


@pytest.mark.slow
def test_parallel_search_on_two_workers_resumes_exactly(tmp_path):
    """4 trials on a LocalCluster of 2 workers (constant liar, batches of 2); interrupted after
    3 trials, the rerun ends exactly where an uninterrupted search does."""
    p = _search_params(4, 1)
    p.optimize.workers = 2
    whole = run_search(p, cheap_objective, tmp_path / "whole", progress=False)
    first = run_search(p, cheap_objective, tmp_path / "cut", progress=False, max_new_trials=3)
    assert len(first.trials) == 3
    resumed = run_search(p, cheap_objective, tmp_path / "cut", progress=False)
    cols = ["trial", *p.optimize.bounds, "target", "kind"]
    pd.testing.assert_frame_equal(whole.trials[cols], resumed.trials[cols])
    log = [json.loads(line) for line in (tmp_path / "cut" / "trials.jsonl").read_text().splitlines()]
    assert sorted(r["trial"] for r in log) == [0, 1, 2, 3]  # no trial evaluated twice
    assert whole.trials["kind"].tolist()[:1] == ["baseline"] and set(whole.trials["batch"]) == {0, 1}
    assert whole.trials[list(p.optimize.bounds)].drop_duplicates().shape[0] == 4  # the liar spreads the batch


def test_holm_and_paired_statistics():
    from l3seg_lib.training.compare import (
        comparison_conclusion,
        holm,
        paired_statistics,
    )

    assert np.allclose(holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    rng = np.random.default_rng(1)
    rows = []
    for seed in (1, 2):
        for i in range(10):
            rows.append({"patient_id": f"p{i}", "seed": seed, **{f"dice_{t}": rng.uniform(0.85, 0.9)
                                                                  for t in ("muscle", "sat", "vat")}})
    base = pd.DataFrame(rows)
    base["dice_mean_fg"] = base[["dice_muscle", "dice_sat", "dice_vat"]].mean(axis=1)
    better = base.copy()
    better["dice_muscle"] += 0.02 + rng.normal(0, 0.002, len(better))
    table = paired_statistics(base, better)
    m = table.loc["muscle"]
    assert m["95% CI low"] < m["difference"] < m["95% CI high"] and m["95% CI low"] > 0.015
    assert m["holm p"] >= m["wilcoxon p"] and m["holm p"] < 0.05
    text = comparison_conclusion(table, 2)
    assert "muscle Dice +0.020" in text and "better" in text and "SAT Dice +0.000" in text and "no detectable" in text


def test_rank_agreement_of_two_scorings():
    from l3seg_lib.training.scale_check import rank_agreement

    a = pd.DataFrame({"target": [0.1, 0.5, 0.3, 0.9], "dice_muscle": [1, 2, 3, 4.0]})
    same = rank_agreement(a, a * 2 + 1, ("target", "dice_muscle"))
    assert np.allclose(same["spearman rho"], 1.0) and (same["a's best ranks under b"] == 1).all()
    flipped = rank_agreement(a, -a, ("target", "dice_muscle"))
    assert np.allclose(flipped["kendall tau"], -1.0) and (flipped["a's best ranks under b"] == 4).all()
    with pytest.raises(ValueError, match="same ones"):
        rank_agreement(a, a.iloc[:3], ("target",))


def test_rescore_continues_after_the_logged_settings(tmp_path):
    from l3seg_lib.training.scale_check import rescore

    p = _search_params()
    points = [{"w_muscle": w, "w_sat": 1.0, "data_ratio": 1.0, "log10_lr": -2.5} for w in (0.5, 1.0, 2.0)]
    calls = []

    def objective(params, point):
        calls.append(point["w_muscle"])
        return {"target": point["w_muscle"] / 10, "dice_muscle": 0.9, "dice_sat": 0.8, "dice_vat": 0.7}

    log = tmp_path / "scores.jsonl"
    rescore(p, objective, points[:2], log, progress=False)
    table = rescore(p, objective, points, log, progress=False)
    assert calls == [0.5, 1.0, 2.0]  # nothing scored twice
    assert table["target"].tolist() == [0.05, 0.1, 0.2] and table["setting"].tolist() == [0, 1, 2]
    with pytest.raises(ResumeError, match="does not match"):
        rescore(p, objective, points[::-1], log, progress=False)


def test_rank_agreement_among_the_best_settings_only():
    from l3seg_lib.training.scale_check import rank_agreement

    a = pd.DataFrame({"target": [0.1, 0.2, 0.8, 0.9, 0.7]})
    b = pd.DataFrame({"target": [0.1, 0.2, 0.9, 0.7, 0.8]})  # the bad two agree, the best three do not
    assert rank_agreement(a, b, ("target",))["spearman rho"].iloc[0] > 0.5
    top = rank_agreement(a, b, ("target",), top=3).iloc[0]
    assert top["settings"] == 3 and top["spearman rho"] == pytest.approx(-0.5) and top["a's best ranks under b"] == 3


def test_conclusion_when_most_patients_lose_a_little_and_one_loses_much():
    from l3seg_lib.training.compare import comparison_conclusion, paired_statistics

    rows = [{"patient_id": f"p{i}", "seed": 1, "dice_muscle": 0.9 + 0.001 * i, "dice_sat": 0.95, "dice_vat": 0.9}
            for i in range(12)]
    base = pd.DataFrame(rows)
    worse = base.copy()
    worse["dice_sat"] -= [0.004 + 0.0005 * i for i in range(11)] + [0.4]  # 11 lose a little, one loses much
    for df in (base, worse):
        df["dice_mean_fg"] = df[["dice_muscle", "dice_sat", "dice_vat"]].mean(axis=1)
    table = paired_statistics(base, worse)
    s = table.loc["sat"]
    assert s["holm p"] < 0.05 and s["95% CI low"] < 0 < s["95% CI high"] and s["median difference"] < 0
    text = comparison_conclusion(table, 1)
    assert "SAT Dice -0.039" in text and "worse in most patients" in text and "size is uncertain" in text
