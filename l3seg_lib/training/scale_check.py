"""Does the search's budget rank settings as training at the model's own scale does?

The search scores its trials cheaply (``optimize.budget``: 128 px instead of 256 px, fewer
epochs and folds). That is only sound when the cheap score orders settings like the full-scale
score. :func:`rescore` evaluates given search points with an objective (e.g. the same budget at
another image size or another seed); :func:`rank_agreement` compares two such scorings by rank
(Spearman's rho, Kendall's tau) for the objective and each tissue, and says where the cheap
scoring's best setting ranks under the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from tqdm import tqdm

from l3seg_lib.config import Params
from l3seg_lib.tissues import TISSUES
from l3seg_lib.training.optimize import (
    Objective,
    _check_logged,
    _evaluate,
    _trial_record,
    append_trial,
    read_trials,
)

SCORES = ("target", *(f"dice_{t}" for t in TISSUES))


def scores_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Logged trials (``trials.jsonl`` or a :func:`rescore` log) as a table: ``setting`` (the
    trial number), the objective, each tissue's Dice and the wall time (s)."""
    return pd.DataFrame([{"setting": r["trial"], **{k: r[k] for k in SCORES if k in r}, "seconds": r["seconds"]}
                         for r in records])


def rescore(params: Params, objective: Objective, points: list[dict[str, float]], log: str | Path,
            progress: bool = True, desc: str = "rescore") -> pd.DataFrame:
    """Each point scored by ``objective``, in order; results are appended to ``log`` (JSON lines)
    as they finish, and a rerun continues after the logged ones (a log of other points is refused)."""
    done = read_trials(log)
    for i, rec in enumerate(done[: len(points)]):
        _check_logged(rec["params"], points[i], i, Path(log))
    for i in tqdm(range(len(done), len(points)), desc=desc, unit="setting", disable=not progress,
                  initial=len(done), total=len(points), mininterval=2.0):
        rec = _trial_record(i, points[i], "rescore", *_evaluate(objective, params, points[i]))
        append_trial(log, rec)
        done.append(rec)
    return scores_frame(done[: len(points)])


def rank_agreement(a: pd.DataFrame, b: pd.DataFrame, columns: tuple[str, ...] = SCORES,
                   top: int | None = None) -> pd.DataFrame:
    """Rank agreement of two scorings of the same settings (rows in the same order), per score
    column: Spearman's rho and Kendall's tau with their p-values, and the rank (1 = best) under
    ``b`` of the setting that ``a`` scores best. With ``top``, only the ``top`` settings that ``a``
    scores best on the objective (``target``) count: the ones a search actually chooses between,
    where clearly bad settings cannot inflate the agreement."""
    if len(a) != len(b):
        raise ValueError(f"the two scorings cover {len(a)} and {len(b)} settings; they must cover the same ones")
    if top is not None:
        keep = np.argsort(-a["target"].to_numpy(float), kind="stable")[:top]
        a, b = a.iloc[keep], b.iloc[keep]
    rows: dict[str, dict[str, Any]] = {}
    for c in columns:
        x, y = a[c].to_numpy(float), b[c].to_numpy(float)
        rho, p_rho = stats.spearmanr(x, y)
        tau, p_tau = stats.kendalltau(x, y)
        ranks_b = stats.rankdata(-y, method="min")
        rows[c] = {"settings": len(x), "spearman rho": float(rho), "spearman p": float(p_rho),
                   "kendall tau": float(tau), "kendall p": float(p_tau),
                   "a's best ranks under b": int(ranks_b[int(np.argmax(x))])}
    return pd.DataFrame.from_dict(rows, orient="index")
