"""Bayesian optimisation of class weights, data ratio and learning rate (``bayesian-optimization``).

Search space (bounds in ``optimize.bounds``): loss weights of muscle, SAT and VAT (background
fixed at 1), the data ratio (augmented copies per original training slice, as in the reference
study) and log10 of the learning rate. Objective: mean foreground Dice over the out-of-fold
validation slices of the dev patients (the held-out test patients are never touched), with the
cheaper training of ``optimize.budget``. Every trial has the same compute: ``budget.epochs`` x
``budget.steps_per_epoch`` optimizer steps per fold whatever its data ratio (which then sets the
share of augmented samples), recorded as ``optimizer_steps`` in the trial log with the trial's
wall time; and it is scored on its last epoch, with no checkpoint chosen on the folds that score it.

Trial 0 is the baseline setting itself (``optimize.include_baseline``), scored under the same
budget. Trials are appended to ``trials.jsonl`` as they finish. A rerun replays the logged trials
through a fresh optimiser with the same seed - which reproduces the same suggestions - and then
continues, so an interrupted search resumes without repeating finished trials and ends exactly
where an uninterrupted one would.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bayes_opt import BayesianOptimization, acquisition
from tqdm import tqdm

from l3seg_lib.config import Params, save_params
from l3seg_lib.dask_client import dask_client
from l3seg_lib.errors import ResumeError
from l3seg_lib.tissues import TISSUES

TRIALS_FILE = "trials.jsonl"
BEST_PARAMS_FILE = "best_params.yaml"


def apply_point(params: Params, point: dict[str, float]) -> Params:
    """Params with a search point applied (class weights, data ratio, learning rate)."""
    p = copy.deepcopy(params)
    w = list(p.train.class_weights)
    for i, key in enumerate(("w_muscle", "w_sat", "w_vat"), start=1):
        if key in point:
            w[i] = float(point[key])
    p.train.class_weights = (float(w[0]), float(w[1]), float(w[2]), float(w[3]))
    if "data_ratio" in point:
        p.train.data_ratio = float(point["data_ratio"])
    if "log10_lr" in point:
        p.train.lr = float(10.0 ** point["log10_lr"])
    return p


def baseline_point(params: Params) -> dict[str, float] | None:
    """The params' own setting as a search point, or None when it lies outside the bounds."""
    w = params.train.class_weights
    values = {"w_muscle": w[1], "w_sat": w[2], "w_vat": w[3], "data_ratio": params.train.data_ratio,
              "log10_lr": math.log10(params.train.lr)}
    point = {k: float(values[k]) for k in params.optimize.bounds}
    inside = all(lo <= point[k] <= hi for k, (lo, hi) in params.optimize.bounds.items())
    return point if inside else None


def budget_params(params: Params) -> Params:
    """Params for one optimisation trial: fewer epochs (and folds / image size, see budget)."""
    p = copy.deepcopy(params)
    p.train.epochs = params.optimize.budget.epochs
    p.train.early_stopping_patience = 0
    p.train.steps_per_epoch = params.optimize.budget.steps_per_epoch  # equal compute across trials
    p.train.select_epoch = "last"  # no checkpoint selection on the folds that score the trial
    return p


def search_signature(params: Params) -> dict[str, Any]:
    """What must match for a trial log to be resumed."""
    o = params.optimize
    return {"bounds": {k: list(v) for k, v in sorted(o.bounds.items())}, "seed": params.seed,
            "init_points": o.init_points, "acquisition": o.acquisition, "include_baseline": o.include_baseline,
            "baseline": baseline_point(params) if o.include_baseline else None,
            "budget": {"epochs": o.budget.epochs, "image_size": o.budget.image_size, "folds": o.budget.folds,
                       "steps_per_epoch": o.budget.steps_per_epoch},
            "model": params.to_dict()["model"], "base_train": {k: v for k, v in params.to_dict()["train"].items()
                                                              if k not in ("class_weights", "data_ratio", "lr")}}


def read_trials(path: str | Path) -> list[dict[str, Any]]:
    """Finished trials from a JSON-lines log; a torn last line (interrupted write) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # interrupted while writing the last trial: it will be rerun
            raise ResumeError(f"{path}: line {i + 1} is not valid JSON") from None
    return records


def append_trial(path: str | Path, record: dict[str, Any]) -> None:
    """Append one trial and flush it to disk before returning."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def make_optimizer(params: Params, random_state: int | None = None) -> BayesianOptimization:
    """A Gaussian-process optimiser over ``optimize.bounds`` (seeded by the params unless given)."""
    o = params.optimize
    acq = (acquisition.ExpectedImprovement(xi=0.01) if o.acquisition == "ei"
           else acquisition.UpperConfidenceBound(kappa=2.576))
    return BayesianOptimization(f=None, pbounds={k: tuple(v) for k, v in o.bounds.items()},
                                acquisition_function=acq,
                                random_state=params.seed if random_state is None else random_state, verbose=0,
                                allow_duplicate_points=True)


Objective = Callable[[Params, dict[str, float]], dict[str, Any]]


def cv_objective(processed_dir: str | Path, manifest: pd.DataFrame, split: pd.DataFrame,
                 progress: bool = True) -> Objective:
    """Objective of the search: budget-mode cross-validation on the dev folds only (with
    ``progress``, each trial shows its folds' epoch bars)."""
    from l3seg_lib.training.crossval import cross_validate

    def objective(params: Params, point: dict[str, float]) -> dict[str, Any]:
        """Mean foreground Dice (``target``), per-tissue Dice and optimizer steps of budget-mode
        cross-validation at ``point``."""
        p = apply_point(budget_params(params), point)
        res = cross_validate(processed_dir, manifest, split, p, out_dir=None,
                             image_size=params.optimize.budget.image_size,
                             folds=params.optimize.budget.folds, label="trial", progress=progress)
        s = res.slices
        return {"target": res.mean_fg_dice, **{f"dice_{t}": float(s[f"dice_{t}"].mean()) for t in TISSUES},
                "optimizer_steps": res.optimizer_steps}

    return objective


@dataclass
class SearchResult:
    """Outcome of the search: the trial log, the best point, its target (mean foreground Dice) and its params."""
    trials: pd.DataFrame
    best_point: dict[str, float]
    best_target: float
    best_params: Params
    best_params_path: Path | None


def run_search(params: Params, objective: Objective, out_dir: str | Path, progress: bool = True,
               max_new_trials: int | None = None) -> SearchResult:
    """Run (or resume) the search in ``out_dir``; writes ``trials.jsonl`` and ``best_params.yaml``.

    With ``optimize.workers`` or ``optimize.scheduler`` the trials run in parallel on Dask
    (:func:`run_parallel_search`). ``max_new_trials`` stops after that many newly evaluated
    trials (to test resuming).
    """
    if params.optimize.workers > 1 or params.optimize.scheduler:
        return run_parallel_search(params, objective, out_dir, progress, max_new_trials)
    out = Path(out_dir)
    log, done = _check_signature(params, out)
    return _serial_search(params, objective, out, log, done, progress, max_new_trials)


def _check_signature(params: Params, out: Path, extra: dict[str, Any] | None = None) -> tuple[Path, list[dict]]:
    """The trial log of ``out`` after checking it belongs to this search (``search.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / TRIALS_FILE
    signature = {**search_signature(params), **(extra or {})}
    sig_path = out / "search.json"
    done = read_trials(log)
    if sig_path.is_file():
        if json.loads(sig_path.read_text()) != json.loads(json.dumps(signature)):
            raise ResumeError(f"{out}: the logged trials were made with other optimisation settings; "
                              f"use a new folder or restore the settings in search.json")
    elif done:
        raise ResumeError(f"{log}: trials exist but search.json is missing; cannot check they belong to this search")
    sig_path.write_text(json.dumps(signature, indent=2))
    return log, done


def _serial_search(params: Params, objective: Objective, out: Path, log: Path, done: list[dict], progress: bool,
                   max_new_trials: int | None) -> SearchResult:
    """Run the trials one after another in this process (logged trials replayed, then new ones evaluated and logged)."""
    opt = make_optimizer(params)
    base, n_random = _opening(params)
    new = 0
    bar = tqdm(range(params.optimize.n_trials), desc="optimise", unit="trial", disable=not progress, mininterval=2.0)
    for t in bar:
        point, kind = _next_point(opt, t, base, n_random)
        if t < len(done):
            rec = done[t]
            _check_logged(rec["params"], point, t, log)
            opt.register(rec["params"], rec["target"])
            continue
        if max_new_trials is not None and new >= max_new_trials:
            break
        rec = _trial_record(t, point, kind, *_evaluate(objective, params, point))
        append_trial(log, rec)
        done.append(rec)
        opt.register(point, rec["target"])
        new += 1
        bar.set_postfix(dice=f"{rec['target']:.3f}", best=f"{max(r['target'] for r in done):.3f}")
    bar.close()
    return _result(params, out, done)


def _result(params: Params, out: Path, done: list[dict[str, Any]]) -> SearchResult:
    """The search's result from its finished trials; writes ``best_params.yaml``."""
    done = sorted(done, key=lambda r: r["trial"])
    trials = trials_frame(done)
    best = max(done, key=lambda r: r["target"]) if done else None
    best_params = apply_point(params, best["params"]) if best else params
    path = None
    if best is not None:
        path = save_params(best_params, out / BEST_PARAMS_FILE)
    return SearchResult(trials, best["params"] if best else {}, best["target"] if best else float("nan"),
                        best_params, path)


def _opening(params: Params) -> tuple[dict[str, float] | None, int]:
    """The baseline point (when it is a trial) and how many trials come before the optimiser's
    suggestions (the baseline plus ``optimize.init_points`` random points)."""
    base = baseline_point(params) if params.optimize.include_baseline else None
    return base, (1 if base is not None else 0) + params.optimize.init_points


def _trial_record(t: int, point: dict[str, float], kind: str, result: dict[str, Any], seconds: float,
                  **extra: Any) -> dict[str, Any]:
    """One line of ``trials.jsonl``: the trial's point, its target, what the objective logged and
    its wall time (s)."""
    return {"trial": t, "params": point, "target": float(result["target"]),
            **{k: v for k, v in result.items() if k != "target"}, "kind": kind, "seconds": seconds, **extra}


def _next_point(opt: BayesianOptimization, t: int, base: dict[str, float] | None, n_random: int
                ) -> tuple[dict[str, float], str]:
    """Trial ``t``'s point: the baseline first (when it is a trial), random points up to
    ``n_random``, then the optimiser's suggestion."""
    if t == 0 and base is not None:
        point, kind = dict(base), "baseline"
    elif t < n_random or len(opt.space) == 0:
        point, kind = opt.random_sample(1)[0], "random"
    else:
        point, kind = opt.suggest(), "bayes"
    return {k: float(v) for k, v in point.items()}, kind


def _check_logged(logged: dict[str, float], point: dict[str, float], t: int, log: Path) -> None:
    """A logged trial must be the point the replay proposes (else the log is another search's)."""
    if set(logged) != set(point) or not np.allclose([logged[k] for k in point], list(point.values()),
                                                    rtol=1e-9, atol=1e-12):
        raise ResumeError(f"{log}: trial {t} does not match the replayed suggestion; the log belongs to "
                          f"another search")


def _propose_batch(params: Params, history: list[dict[str, Any]], first: int, size: int, batch_index: int
                   ) -> list[tuple[int, dict[str, float], str]]:
    """``size`` trial points from ``first`` on, knowing the finished ``history``: the constant-liar
    strategy (each proposed point is registered with the worst target seen so far, so the next
    suggestion looks elsewhere). A fresh optimiser seeded from the batch makes it reproducible."""
    opt = make_optimizer(params, params.seed + 7919 * batch_index)
    for rec in history:
        opt.register(rec["params"], rec["target"])
    liar = min((r["target"] for r in history), default=0.0)
    base, n_random = _opening(params)
    points = []
    for t in range(first, first + size):
        point, kind = _next_point(opt, t, base, n_random)
        points.append((t, point, kind))
        opt.register(point, liar)
    return points


def _evaluate(objective: Objective, params: Params, point: dict[str, float]) -> tuple[dict[str, Any], float]:
    """The objective's result at ``point`` and its wall time (s); on a worker pinned to a GPU
    (``CUDA_VISIBLE_DEVICES``) the result also names that GPU (``gpu``)."""
    t0 = time.perf_counter()
    result = objective(params, point)
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    return ({**result, "gpu": gpu} if gpu else result), time.perf_counter() - t0


def run_parallel_search(params: Params, objective: Objective, out_dir: str | Path, progress: bool = True,
                        max_new_trials: int | None = None) -> SearchResult:
    """The search with trials in parallel on Dask workers (``optimize.workers`` on a LocalCluster,
    or the cluster at ``optimize.scheduler``), in batches of the number of workers proposed by the
    constant-liar strategy. Each trial is logged as it finishes; a rerun recomputes the batches
    from the log (deterministically), checks the logged points and evaluates only what is
    missing, so an interrupted search resumes exactly."""
    o = params.optimize
    with dask_client(o.workers, o.scheduler, processes=o.workers > 1 and _picklable(objective)) as client:
        size = max(1, len(client.scheduler_info()["workers"]) if o.scheduler else o.workers)
        done = _parallel_trials(params, objective, Path(out_dir), client, size, progress, max_new_trials)
    return _result(params, Path(out_dir), list(done.values()))


def _parallel_trials(params: Params, objective: Objective, out: Path, client: Any, size: int, progress: bool,
                     max_new_trials: int | None) -> dict[int, dict[str, Any]]:
    """The trials of :func:`run_parallel_search` by number, logged and resumed batch by batch."""
    from dask.distributed import as_completed

    o = params.optimize
    log, done_list = _check_signature(params, out, {"parallel_batch": size})
    done = {r["trial"]: r for r in done_list}
    new = 0
    bar = tqdm(total=o.n_trials, initial=len(done), desc="optimise (dask)", unit="trial", disable=not progress,
               mininterval=2.0)
    try:
        for b, first in enumerate(range(0, o.n_trials, size)):
            history = [done[t] for t in range(first) if t in done]
            if len(history) < first:
                break  # an earlier batch is incomplete (stopped on purpose): stop here too
            batch = _propose_batch(params, history, first, min(size, o.n_trials - first), b)
            todo = []
            for t, point, kind in batch:
                if t in done:
                    _check_logged(done[t]["params"], point, t, log)
                else:
                    todo.append((t, point, kind))
            if max_new_trials is not None:
                todo = todo[: max(0, max_new_trials - new)]
            futures = {client.submit(_evaluate, objective, params, point, pure=False): (t, point, kind)
                       for t, point, kind in todo}
            for future in as_completed(futures):
                t, point, kind = futures[future]
                rec = _trial_record(t, point, kind, *future.result(), batch=b)
                append_trial(log, rec)
                done[t] = rec
                new += 1
                bar.update(1)
            if max_new_trials is not None and new >= max_new_trials:
                break
    finally:
        bar.close()
    return done


def _picklable(objective: Objective) -> bool:
    """Whether the objective can go to worker processes: l3seg's own objectives (their code is
    importable there); others (e.g. defined in a notebook or a test) run in worker threads."""
    if not str(getattr(objective, "__module__", "")).startswith("l3seg_lib"):
        return False
    try:
        import cloudpickle

        cloudpickle.dumps(objective)
        return True
    except Exception:  # noqa: BLE001 - any failure means: keep it in this process
        return False


def trials_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Trials as a table: one column per search parameter, the objective and best-so-far."""
    if not records:
        return pd.DataFrame()
    df = pd.DataFrame([{"trial": r["trial"], **r["params"], **{k: v for k, v in r.items() if k not in ("params", "trial")}}
                       for r in records])
    if "log10_lr" in df.columns:
        df["lr"] = 10.0 ** df["log10_lr"]
    df["best_so_far"] = df["target"].cummax()
    return df
